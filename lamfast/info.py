"""Machine and library information for ``lamfast info`` and benchmark records."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

import numba
import numpy as np
import scipy
import threadpoolctl

from ._jit import CACHE, FASTMATH, NOGIL, cache_dir
from ._version import __version__


def machine_info() -> dict:
    """Versions, BLAS vendor/core type/threads, numba threading layer and cache, extras."""
    info = {
        "lamfast": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
    }
    pools = threadpoolctl.threadpool_info()
    info["blas"] = (
        "; ".join(
            f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
            f"threads={p.get('num_threads')}"
            for p in pools
            if p.get("user_api") == "blas"
        )
        or "(none found)"
    )
    try:
        info["numba threading layer"] = _threading_layer(numba)
        info["numba threads"] = numba.config.NUMBA_NUM_THREADS
    except AttributeError:  # pragma: no cover - very old numba
        pass
    info["numba cache dir"] = cache_dir()
    info["kernel options"] = f"cache={CACHE} fastmath={FASTMATH} nogil={NOGIL}"
    # An extra is present when every module it needs can be found; find_spec does not import it.
    for extra, modules in EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        info[f"extra: {extra}"] = "present" if not missing else f"missing ({', '.join(missing)})"
    return info


# Optional extras and the top-level modules each needs (pyproject's optional-dependencies).
EXTRAS = {
    "dask": ("dask", "distributed"),
    "matplotlib": ("matplotlib",),
    "zarr": ("zarr",),
    "scikit-learn": ("sklearn",),
    "threadpoolctl": ("threadpoolctl",),
}


def _threading_layer(numba) -> str:
    """The requested numba threading layer, and the active one once a parallel kernel ran."""
    requested = numba.config.THREADING_LAYER
    try:
        active = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process
        active = "not initialised"
    return f"{requested} (active: {active})"
