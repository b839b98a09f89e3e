"""The one place where numba options are chosen (STYLE 4).

Every kernel in lamfast is decorated with :func:`njit` from this module. The options come from
environment switches read once at import:

``LAMFAST_CACHE``     (default ``1``) write compiled kernels to numba's on-disk cache, so the
                      second process does not recompile.
``LAMFAST_FASTMATH``  (default ``0``) off by default: fastmath reassociates sums, which would break
                      the bitwise determinism promised for moments (DESIGN 3.2).
``LAMFAST_NOGIL``     (default ``1``) release the GIL inside kernels so threads can overlap.

Kernels are compiled lazily on first call, never at import.
"""

from __future__ import annotations

import os

import numba


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


CACHE = _flag("LAMFAST_CACHE", True)
FASTMATH = _flag("LAMFAST_FASTMATH", False)
NOGIL = _flag("LAMFAST_NOGIL", True)


def njit(*args, **kwargs):
    """``numba.njit`` with lamfast's options; explicit keyword arguments win."""
    options = {"cache": CACHE, "fastmath": FASTMATH, "nogil": NOGIL}
    options.update(kwargs)
    if args and callable(args[0]) and len(args) == 1:
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)
