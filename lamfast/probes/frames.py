"""Probes that need the rows of a frame dataset: the argmax accuracy of linear action probes."""

from __future__ import annotations

import numpy as np

from ..errors import LamfastError
from ..sources.frames.source import FrameSource


def probe_accuracy(source: FrameSource, probes: list, progress=None) -> list[float]:
    """Argmax accuracy of linear action probes, in one more streaming pass.

    ``probes`` is a list of ``(W, G, h)``: latent map on the joint vector, probe weights and
    intercept; the predicted action of a transition is ``argmax(G W x + h)``. Transitions
    without an action label (partial labels) are not scored.
    """
    if source.action_kind != "discrete":
        raise LamfastError("probe accuracy needs discrete actions")
    do = source.do
    hits = np.zeros(len(probes))
    total = 0
    for o, o2, acts in source.transitions(progress=progress, label="accuracy"):
        keep = source.labelled(acts)
        if not keep.all():
            o, o2, acts = o[keep], o2[keep], acts[keep]
        ids = acts.astype(np.int64)
        delta = o2 - o
        for j, (W, G, h) in enumerate(probes):
            # W acts on [o, delta, a]; the latent never reads the a block (latent_map)
            z = o @ W[:, :do].T + delta @ W[:, do : 2 * do].T
            pred = np.argmax(z @ G.T + h, axis=1)
            hits[j] += np.count_nonzero(pred == ids)
        total += ids.shape[0]
    return (hits / max(total, 1)).tolist()
