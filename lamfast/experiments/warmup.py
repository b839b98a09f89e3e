"""Compiling a run's kernels once, before its worker processes need them (docs/performance.md,
cold start).

With an empty numba cache every worker process of :func:`lamfast.experiments.runner.run_points`
used to compile the same kernels at the same time (then about 27 s for the ``moment-gd`` kernel on
a 2-core box): on two cores that is one core's worth of duplicated work while no grid point
advances. Instead the runner asks :func:`missing` which kernels of the run are not in the on-disk
cache (reading numba's small index files only: no kernel is loaded or compiled), has one process
compile them with :func:`warm_up`, and meanwhile lets the other workers compute the points that
need no kernel (the closed-form ``eig`` fits on population or Wishart moments); the points that
need a kernel start once the cache is written and load it from disk.

Which kernels a grid point needs follows from its solver and source (:func:`kinds`, :data:`KERNELS`,
the kernels called from Python; the kernels they call are compiled with them).
``tests/test_coldstart.py`` checks that the table and the warm-up match what a point compiles.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import time
from collections.abc import Iterable, Sequence

from numba.core.registry import CPUDispatcher

from .. import config
from .._jit import CACHE
from .panels import PROTOCOL_SOLVER
from .points import compute_points

# Kinds of work that run numba kernels, and the kernels each calls from Python (top-level).
KERNELS: dict[str, tuple[tuple[str, str], ...]] = {
    # the L-BFGS polish evaluates the objective through _adam_kernel too (no step)
    "moment-gd": (("lamfast.solvers.gd", "_adam_kernel"),),
    "sgd": (("lamfast.solvers.sgd", "_sgd_kernel"),),
    "stream": (
        ("lamfast.sources.simulate", "_centred_sources"),
        ("lamfast.moments.core", "_chan_merge"),
    ),
}


def kinds(point) -> frozenset[str]:
    """Kinds of kernel work (keys of :data:`KERNELS`) a grid point runs; empty: none.

    ``eig`` fits and probes are closed forms (numpy and LAPACK), population and Wishart moments
    too; ``moment-gd`` fits (also the paper-mode twin of ``--chi1-protocol``), ``sgd`` fits and
    streamed moments run kernels.
    """
    out = set()
    if point.solver in ("moment-gd", PROTOCOL_SOLVER):
        out.add("moment-gd")
    elif point.solver == "sgd":
        out.add("sgd")
    if point.source == "stream":
        out.add("stream")
    return frozenset(out)


def _dispatcher(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def _on_disk(disp) -> bool | None:
    """Whether numba's on-disk cache holds ``disp`` compiled for this machine and this source.

    Reads the kernel's index file (a few kB; no kernel is loaded): an entry counts if its
    bytecode hash and target (CPU name and features) are this process's and its data file
    exists. None when this cannot be told (caching off, numba internals changed).
    """
    try:
        cache = disp._cache
        index = cache._cache_file._load_index()  # {} when stale (source changed) or absent
        want = cache._index_key(None, disp.targetctx.codegen())[1:]
        path = cache.cache_path
    except Exception:  # NullCache (caching off) or other numba internals
        return None
    return any(
        key[1:] == want and os.path.exists(os.path.join(path, name)) for key, name in index.items()
    )


def _writable(path: str) -> bool:
    while not os.path.isdir(path):  # the nearest existing folder decides whether it can be made
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK | os.X_OK)


def missing(needed: Iterable[str], in_process: bool = False) -> list[str]:
    """Kinds among ``needed`` with a kernel that is not in the on-disk cache, in table order.

    Empty when compiling once cannot help: caching off (``LAMFAST_CACHE=0``), an unwritable cache
    folder (each process would compile anyway), or numba internals this module does not know.
    ``in_process``: kernels already compiled or loaded in this process count as present (the
    run is in this process, ``--jobs 1``).
    """
    needed = set(needed)
    if not needed or not CACHE:
        return []
    out = []
    for kind in KERNELS:
        if kind not in needed:
            continue
        for module, name in KERNELS[kind]:
            disp = _dispatcher(module, name)
            if in_process and disp.signatures:
                continue
            state = _on_disk(disp)
            if state is None:
                return []
            if not state:
                if not _writable(disp._cache.cache_path):
                    return []
                out.append(kind)
                break
    return out


def examples(points: Sequence, wanted: Iterable[str]) -> list:
    """Small copies of the run's points that run every kernel of the kinds ``wanted``.

    One per kind, copied from the first point of that kind: same solver, source, variant, noise,
    evaluations and latent, on a world with ``do = 4`` (the kernels' argument types do not depend
    on the sizes, so they are the run's compiled versions) and, for the stream, three blocks of
    rows (so that blocks are merged as in the run).
    """
    wanted = set(wanted)
    out = []
    for p in points:
        here = kinds(p) & wanted
        if not here:
            continue
        wanted -= here
        w = p.world
        world = w.replace(do=4, da=min(w.da, 2), db=min(w.db, 2))
        rows = None if p.source == "population" else 3 * int(config.BLOCK_ROWS)
        out.append(dataclasses.replace(p, world=world, dz=min(p.dz, 2), rows=rows))
        if not wanted:
            break
    return out


def compile_counts() -> dict[str, tuple[int, int]]:
    """``{module.kernel: (cache hits, compilations)}`` of lamfast's kernels in this process.

    Numba's dispatcher statistics: a hit is a version loaded from the on-disk cache, a miss a
    version compiled here (kernels compiled as callees of another kernel count too).
    """
    out = {}
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("lamfast") or module is None:
            continue
        for name, obj in list(vars(module).items()):
            if isinstance(obj, CPUDispatcher) and obj.__module__ == modname:
                stats = obj.stats
                out[f"{modname}.{name}"] = (
                    sum(stats.cache_hits.values()),
                    sum(stats.cache_misses.values()),
                )
    return out


def warm_up(points: Sequence) -> tuple[float, int]:
    """Compute ``points`` (from :func:`examples`) and so compile and cache their kernels.

    Returns the seconds taken and the number of kernel versions compiled. The rows are thrown
    away; runs in a worker process of the run or, with ``--jobs 1``, in the run's own process.
    """
    start = time.perf_counter()
    before = sum(m for _, m in compile_counts().values())
    for p in points:
        compute_points([p])
    after = sum(m for _, m in compile_counts().values())
    return time.perf_counter() - start, after - before
