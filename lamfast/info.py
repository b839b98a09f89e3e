"""Machine and library information for ``lamfast info`` and benchmark records."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys


def machine_info() -> dict:
    """Versions, BLAS vendor/core type/threads, numba threading layer and cache, extras."""
    import numba
    import numpy as np
    import scipy

    from . import __version__
    from ._jit import CACHE, FASTMATH, NOGIL

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
    try:
        import threadpoolctl

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
    except ImportError:
        info["blas"] = "(install threadpoolctl for BLAS details)"
    try:
        info["numba threading layer"] = numba.config.THREADING_LAYER
        info["numba threads"] = numba.config.NUMBA_NUM_THREADS
    except AttributeError:  # pragma: no cover - very old numba
        pass
    info["numba cache dir"] = numba.config.CACHE_DIR or "(next to the package, __pycache__)"
    info["kernel options"] = f"cache={CACHE} fastmath={FASTMATH} nogil={NOGIL}"
    for extra, module in (("dask", "distributed"), ("matplotlib", "matplotlib"), ("zarr", "zarr")):
        spec = importlib.util.find_spec(module)
        info[f"extra: {extra}"] = "present" if spec is not None else "missing"
    return info
