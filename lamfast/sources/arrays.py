"""Array inputs and moment sources of the public Python API: the dtype and shape rules.

Rules for every array argument (``o``, ``o_next``, ``a``, ``noise``, ``z``)
-------------------------------------------------------------------------
- **Types.** numpy arrays, numpy memmaps (read chunk by chunk, never copied whole), nested
  lists, and any object with ``__array__`` (a PyTorch CPU tensor, an xarray ``DataArray``, ...).
  A GPU tensor or a tensor that requires grad cannot be converted: call ``.detach().cpu()``.
- **dtypes.** float32 and float64 are used as given; integer and bool arrays (``uint8`` pixels)
  are accepted too. Everything is converted to float64 *before* any arithmetic, so a frame
  difference of ``uint8`` frames never wraps around, and moments are accumulated in float64
  whatever the input dtype (docs/architecture.md, determinism). Object arrays of numbers are
  converted; complex and string dtypes, and objects that are not numbers, are refused.
- **Shapes.** Row ``i`` of every array belongs to the same transition. ``o`` and ``o_next`` are
  ``(n, do)``; arrays with more dimensions, such as ``(n, height, width, channels)`` frames, are
  flattened to ``(n, do)``. ``a`` (and ``noise``) are ``(n, da)``; a 1-d ``a`` is one action per
  row, ``(n, 1)``. ``n >= 1``; every array has the same ``n``.
- **Values.** NaN and inf are refused, naming the first bad row.

Errors are :class:`~lamfast.errors.LamfastError` with a one-line message naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import config
from ..errors import LamfastError, LamfastTypeError
from ..moments.accumulate import BlockAccumulator, block_threads
from ..moments.core import Moments
from .world import LinearWorld

NOISE_NAMES = ("b", "eps")


def as_rows(x: Any, name: str, *, allow_1d: bool = False) -> np.ndarray:
    """Validate one array argument and view it as rows ``(n, k)`` without copying if possible.

    Parameters
    ----------
    x : array_like
        A numpy array or memmap, or any object with ``__array__``.
    name : str
        The argument's name, used in error messages.
    allow_1d : bool
        Read a 1-d array as one column (``(n,)`` -> ``(n, 1)``), e.g. scalar actions.

    Returns
    -------
    ndarray, shape (n, k)
        The input's dtype is kept (memmaps stay memmaps); see the module docstring for the rules.

    Examples
    --------
    >>> as_rows(np.zeros((3, 2, 2), dtype=np.uint8), "o").shape
    (3, 4)
    >>> as_rows([1.0, 2.0], "a", allow_1d=True).shape
    (2, 1)
    >>> as_rows(np.zeros(3, dtype=complex), "o")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lamfast.errors.LamfastError: o: Complex data not supported (...), got dtype complex128
    """
    if x is None:
        raise LamfastError(f"{name} is missing")
    if hasattr(x, "tocsr") or type(x).__module__.startswith("scipy.sparse"):
        raise LamfastError(
            f"{name} is a sparse matrix: sparse input is not supported (frames and their "
            "differences are dense); pass a dense array, e.g. x.toarray()"
        )
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # e.g. a CUDA tensor, or a tensor that requires grad
            raise LamfastError(
                f"{name} could not be converted to a numpy array ({type(x).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); pass a CPU array, "
                "e.g. tensor.detach().cpu()"
            ) from None
    if x.dtype.kind == "O":  # objects that are numbers (a list of Decimals, a pandas column)
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise LamfastTypeError(
                f"{name} has dtype object and holds objects that are not numbers "
                f"({str(e).splitlines()[0]})"
            ) from None
    if x.dtype.kind == "c":
        raise LamfastError(
            f"{name}: Complex data not supported (frames are real), got dtype {x.dtype}"
        )
    if x.dtype.kind not in "fiub":
        raise LamfastError(
            f"{name} must hold real numbers (float32 or float64; integers and bool are "
            f"converted), got dtype {x.dtype}"
        )
    if x.ndim == 0:
        raise LamfastError(f"{name} must be an array of rows, got a scalar")
    if x.ndim == 1:
        if not allow_1d:
            raise LamfastError(
                f"{name} must be 2-d (n, features) or n frames (n, ...), got shape {x.shape}"
            )
        x = x.reshape(-1, 1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    if x.shape[0] < 1:
        raise LamfastError(f"{name} has no rows")
    if x.shape[1] < 1:
        raise LamfastError(
            f"{name} has 0 feature(s) (shape={x.shape}) while a minimum of 1 is required."
        )
    return x


def _check_finite(x: np.ndarray, name: str, offset: int = 0) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = offset + int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise LamfastError(f"{name} row {bad} contains NaN or inf")


def _same_rows(arrays: dict[str, np.ndarray]) -> int:
    counts = {name: x.shape[0] for name, x in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k} has {v}" for k, v in counts.items())
        raise LamfastError(f"every array needs the same number of rows: {listed}")
    return next(iter(counts.values()))


def split_transitions(o, o_next=None, a=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Resolve the two array forms of a transition into ``(o, o_next, a)`` rows.

    - ``(o, o_next, a=None)``: ``o`` and ``o_next`` of the same shape ``(n, do)``;
    - ``(X, y=None)``, the scikit-learn form: ``X`` of shape ``(n, 2 * do)`` holds ``o`` and
      ``o_next`` side by side; the optional second argument ``y`` holds the actions
      ``(n, da)`` or ``(n,)``. It is recognised when the second argument is not shaped like the
      first and has at most ``do`` columns (LAMs need ``da <= do``).

    Examples
    --------
    >>> X = np.arange(8.0).reshape(2, 4)
    >>> o, o_next, a = split_transitions(X)
    >>> o.tolist(), o_next.tolist(), a
    ([[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]], None)
    """
    first = as_rows(o, "o")
    if o_next is None:
        if a is not None:
            raise LamfastError(
                "a needs o_next: pass (o, o_next, a), or (X, a) with X = [o | o_next]"
            )
        return (*_halves(first), None)
    second = as_rows(o_next, "o_next", allow_1d=True)
    if second.shape == first.shape:
        a = None if a is None else as_rows(a, "a", allow_1d=True)
        arrays = {"o": first, "o_next": second, **({"a": a} if a is not None else {})}
        _same_rows(arrays)
        return first, second, a
    # the raw array's own ndim (np.ndim would call __array_function__, which array-likes such
    # as scikit-learn's _NotAnArray refuse)
    raw_ndim = np.asarray(o_next).ndim if not isinstance(o_next, np.ndarray) else o_next.ndim
    narrow = second.shape[1] <= max(first.shape[1] // 2, 1)  # y (actions) beside X = [o | o_next]
    if a is None and raw_ndim <= 2 and narrow and first.shape[1] % 2:
        raise LamfastError(
            "X needs an even number of columns: o and o_next side by side, (n, 2 * do); "
            f"got {first.shape[1]} columns"
        )
    looks_like_xy = a is None and raw_ndim <= 2 and second.shape[1] <= first.shape[1] // 2
    if not looks_like_xy:
        raise LamfastError(
            f"o_next must have the same shape as o, got {second.shape} and {first.shape}"
        )
    o_, on_ = _halves(first)
    _same_rows({"X": first, "y (actions)": second})
    return o_, on_, second


def _halves(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if X.shape[1] % 2:
        raise LamfastError(
            "a single array must hold o and o_next side by side, shape (n, 2 * do); "
            f"got {X.shape[1]} columns"
        )
    do = X.shape[1] // 2
    return X[:, :do], X[:, do:]


def moments_from_transitions(
    o,
    o_next,
    a=None,
    noise=None,
    *,
    block_rows: int | None = None,
) -> Moments:
    """Moments of the joint vector ``[o, delta, a, eps]`` of transitions, ``delta = o_next - o``.

    Rows are processed ``block_rows`` at a time (memmaps are never loaded whole) and merged by the
    same fixed tree as :func:`~lamfast.moments.moments_from_rows`; the result is bitwise equal to
    ``moments_from_rows(np.hstack([o, o_next - o, a, noise]), blocks, block_rows)`` computed in
    float64.

    Parameters
    ----------
    o, o_next : array_like, shape (n, do) or (n, ...)
        Observations and next observations (see the module docstring for dtype/shape rules).
    a : array_like, shape (n, da) or (n,), optional
        Actions; adds a block ``a`` (needed for action probes and supervision).
    noise : array_like, shape (n, k), optional
        Exogenous noise, when known (simulations); adds a block ``eps`` for the noise probe.
    block_rows : int, optional
        Rows per block (default ``config.BLOCK_ROWS``).

    Returns
    -------
    Moments
        Layout ``[("o", do), ("delta", do), ("a", da)?, ("eps", k)?]``, ``source="rows"``.

    Examples
    --------
    >>> o = np.zeros((4, 2), dtype=np.uint8)
    >>> o_next = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    >>> m = moments_from_transitions(o, o_next, a=[0, 1, 2, 3])
    >>> m.blocks, m.block_mean("delta").tolist()
    ((('o', 2), ('delta', 2), ('a', 1)), [0.5, 0.5])
    """
    o = as_rows(o, "o")
    o_next = as_rows(o_next, "o_next")
    if o_next.shape != o.shape:
        raise LamfastError(
            f"o_next must have the same shape as o, got {o_next.shape} and {o.shape}"
        )
    arrays = {"o": o, "o_next": o_next}
    if a is not None:
        arrays["a"] = as_rows(a, "a", allow_1d=True)
    if noise is not None:
        arrays["noise"] = as_rows(noise, "noise", allow_1d=True)
    n = _same_rows(arrays)
    do = o.shape[1]
    blocks = [("o", do), ("delta", do)]
    if a is not None:
        blocks.append(("a", arrays["a"].shape[1]))
    if noise is not None:
        blocks.append(("eps", arrays["noise"].shape[1]))
    p = sum(s for _, s in blocks)
    step = int(block_rows or config.BLOCK_ROWS)
    if step < 1:
        raise LamfastError(f"block_rows must be >= 1, got {block_rows!r}")
    acc = None
    for start in range(0, n, step):
        stop = min(start + step, n)
        for name, x in arrays.items():
            _check_finite(x[start:stop], name, start)
        joint = np.empty((stop - start, p))
        oc = o[start:stop]
        joint[:, :do] = oc
        # Convert before subtracting: uint8 frames would otherwise wrap around.
        np.subtract(o_next[start:stop], oc, out=joint[:, do : 2 * do], dtype=np.float64)
        col = 2 * do
        for name in ("a", "noise"):
            if name in arrays:
                x = arrays[name][start:stop]
                joint[:, col : col + x.shape[1]] = x
                col += x.shape[1]
        if acc is None:
            # Shift by the first joint row, exactly as moments_from_rows does (precision at large
            # offsets), so both give the same bits for the same rows.
            threads = block_threads(p, step) if n > step else 1
            acc = BlockAccumulator(tuple(blocks), step, threads=threads, shift=joint[0].copy())
        acc.add(joint)
    return acc.result("rows")


def moments_of(source: Any) -> Moments:
    """Moments of a fit source: ``Moments`` as is, a ``LinearWorld`` (population moments), or any
    object with a ``moments()`` method returning ``Moments`` (a frame stream, a reader, ...).

    Examples
    --------
    >>> moments_of(LinearWorld(do=8, da=2)).source
    'population'
    """
    if isinstance(source, Moments):
        return source
    if isinstance(source, LinearWorld):
        return source.population_moments()
    method = getattr(source, "moments", None)
    if callable(method):
        m = method()
        if not isinstance(m, Moments):
            raise LamfastError(
                f"{type(source).__name__}.moments() must return Moments, got {type(m).__name__}"
            )
        return m
    raise LamfastError(
        "expected Moments, a LinearWorld, an object with a moments() method, or arrays; "
        f"got {type(source).__name__}"
    )


def is_source(x: Any) -> bool:
    """Whether ``x`` is a moment source rather than an array."""
    return isinstance(x, Moments | LinearWorld) or callable(getattr(x, "moments", None))
