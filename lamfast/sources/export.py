"""Write a simulated world's stream to disk as pairs data, for training your own (deep) LAMs.

Layout (what :mod:`lamfast.sources.frames` reads): ``o`` and ``o_next`` (n x do float64),
``actions``
(n x da float64), the ground-truth noise ``b`` (exo) or ``eps`` (gaussian/uniform) when the world
has noise, and ``world.json`` (the world's spec, block rows and row count). ``OUT`` is either a
directory (one ``.npy`` per key, written in one pass through memory maps) or a ``.npz`` (the same
files, then stored uncompressed into the archive). Rows are the world's stream
(docs/architecture.md, determinism), block
by block, so reading them back gives the moments of ``stream_moments`` on the same world.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import config
from .._files import atomic_folder, atomic_output, check_output, check_output_folder
from .._progress import Progress
from ..errors import LamfastError
from .simulate import _check_rows, simulate_rows
from .world import LinearWorld


def write_world(
    world: LinearWorld,
    rows,
    out,
    *,
    block_rows: int | None = None,
    progress=None,
    force: bool = False,
) -> dict:
    """Write ``rows`` transitions of ``world`` to ``out`` (directory or ``.npz``), atomically.

    Memory is one block of rows; the output appears only when complete.

    Examples
    --------
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "data")
    >>> write_world(LinearWorld(do=4, da=2), 100, out)["rows"]
    100
    """
    n = _check_rows(rows)
    block_rows = int(block_rows or config.BLOCK_ROWS)
    out = Path(out)
    as_npz = out.suffix.lower() == ".npz"
    if as_npz:
        check_output(out, force=force, create_folder=True)
    elif os.path.lexists(out):
        raise LamfastError(f"{out} exists; remove it or choose another --out")
    else:
        check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "world": world.to_dict(),
        "rows": n,
        "block_rows": block_rows,
        "layout": "pairs: o, o_next = o + delta, actions = a, noise block as in world.blocks",
        "noise_block": world.noise_block,
    }
    if as_npz:  # the arrays are written to a staging folder, then stored into OUT.npz
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as staging:
            _write_world_files(world, n, block_rows, Path(staging), spec, progress)
            with (
                atomic_output(out) as zpath,
                zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED, allowZip64=True) as z,
            ):
                for f in sorted(Path(staging).iterdir()):
                    z.write(f, f.name)
    else:
        with atomic_folder(out) as tmp:
            _write_world_files(world, n, block_rows, tmp, spec, progress)
    return {"out": str(out), "rows": n, "block_rows": block_rows, "world": world.to_dict()}


def _write_world_files(world, n, block_rows, folder: Path, spec: dict, progress):
    _write_arrays(world, n, block_rows, folder, progress)
    (folder / "world.json").write_text(json.dumps(spec, indent=2) + "\n")


def _write_arrays(world, n, block_rows, tmp: Path, progress):
    do, da = world.do, world.da
    cols = {"o": (0, do), "delta": (do, 2 * do), "a": (2 * do, 2 * do + da)}
    if world.noise_block:
        size = dict(world.blocks)[world.noise_block]
        cols[world.noise_block] = (2 * do + da, 2 * do + da + size)
    maps = {
        "o": np.lib.format.open_memmap(tmp / "o.npy", "w+", np.float64, (n, do)),
        "o_next": np.lib.format.open_memmap(tmp / "o_next.npy", "w+", np.float64, (n, do)),
        "actions": np.lib.format.open_memmap(tmp / "actions.npy", "w+", np.float64, (n, da)),
    }
    if world.noise_block:
        lo, hi = cols[world.noise_block]
        maps[world.noise_block] = np.lib.format.open_memmap(
            tmp / f"{world.noise_block}.npy", "w+", np.float64, (n, hi - lo)
        )
    with Progress(total=n, label="simulate", enabled=progress) as bar:
        for k, start in enumerate(range(0, n, block_rows)):
            m = min(block_rows, n - start)
            x = simulate_rows(world, k, m)
            o = x[:, slice(*cols["o"])]
            maps["o"][start : start + m] = o
            maps["o_next"][start : start + m] = o + x[:, slice(*cols["delta"])]
            maps["actions"][start : start + m] = x[:, slice(*cols["a"])]
            if world.noise_block:
                maps[world.noise_block][start : start + m] = x[:, slice(*cols[world.noise_block])]
            bar.update(m)
    for mm in maps.values():
        mm.flush()
    del maps


def read_spec(path) -> dict | None:
    """The ``world.json`` stored with data written by :func:`write_world` (None if absent)."""
    path = Path(path)
    if path.is_dir():
        f = path / "world.json"
        return json.loads(f.read_text()) if f.exists() else None
    if path.suffix.lower() == ".npz":
        with zipfile.ZipFile(path) as z:
            if "world.json" in z.namelist():
                return json.loads(z.read("world.json"))
    return None
