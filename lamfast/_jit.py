"""The one place where numba options are chosen (docs/architecture.md, conventions).

Every kernel in lamfast is decorated with :func:`njit` from this module. The options come from
environment switches read once at import:

``LAMFAST_CACHE``     (default ``1``) write compiled kernels to numba's on-disk cache, so the
                      second process does not recompile.
``LAMFAST_FASTMATH``  (default ``0``) off by default: fastmath reassociates sums, which would break
                      the bitwise determinism promised for moments (docs/architecture.md,
                      determinism).
``LAMFAST_NOGIL``     (default ``1``) release the GIL inside kernels so threads can overlap.
``LAMFAST_CACHE_DIR`` where the compiled kernels are cached (default
                      ``$XDG_CACHE_HOME/lamfast/numba``, i.e. ``~/.cache/lamfast/numba``).

Kernels are compiled lazily on first call, never at import.

Why not numba's default cache location: numba writes next to the source, into the installed
package's ``__pycache__``. ``pip uninstall`` leaves those files behind, and the leftover
``site-packages/lamfast/`` folder then shadows a later editable install as an empty namespace
package (``pip install .`` then ``pip install -e .`` broke ``import lamfast``). A user cache
directory also works for read-only installs. Only lamfast's kernels use it; numba's global
``NUMBA_CACHE_DIR``, when set, still wins.
"""

from __future__ import annotations

import os
import tempfile

import numba

try:  # numba's caching classes (public names since 0.59; internals may move)
    from numba.core import caching
except ImportError:  # pragma: no cover
    caching = None


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


CACHE = _flag("LAMFAST_CACHE", True)
FASTMATH = _flag("LAMFAST_FASTMATH", False)
NOGIL = _flag("LAMFAST_NOGIL", True)


def cache_dir() -> str:
    """Directory of lamfast's numba cache (``numba.config.CACHE_DIR`` if the user set one)."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    custom = os.environ.get("LAMFAST_CACHE_DIR")
    if custom:
        return os.path.abspath(os.path.expanduser(custom))
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        if home.startswith("~"):  # no HOME and no passwd entry: never a relative "~" folder
            user = getattr(os, "getuid", lambda: "user")()
            return os.path.join(tempfile.gettempdir(), f"lamfast-{user}", "numba")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "lamfast", "numba")


def _function_cache(py_func):
    """numba's ``FunctionCache`` for ``py_func``, located in :func:`cache_dir` (module doc).

    Uses numba's caching classes (public names since 0.59); None if they are not there, and the
    kernel is then not cached at all (never in the package's own ``__pycache__``).
    """
    try:
        if caching is None:
            raise ImportError
        base_locator = getattr(caching, "UserProvidedCacheLocator", None)
        if base_locator is None:  # pragma: no cover - numba < 0.59 named it privately
            base_locator = caching._UserProvidedCacheLocator
        base_impl = caching.CompileResultCacheImpl
        base_cache = caching.FunctionCache
    except (ImportError, AttributeError):  # pragma: no cover - older or newer numba internals
        return None

    class Locator(base_locator):
        def __init__(self, func, py_file):
            self._py_file = py_file
            self._lineno = func.__code__.co_firstlineno
            self._cache_path = os.path.join(cache_dir(), self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, func, py_file):
            return cls(func, py_file) if os.path.exists(py_file) else None

    class Impl(base_impl):
        _locator_classes = [Locator]

    class LamfastFunctionCache(base_cache):
        """Caching that never fails a kernel: an unwritable or uncreatable cache directory
        (no HOME, a read-only home, a bad LAMFAST_CACHE_DIR) means compiling every time."""

        _impl_class = Impl

        def load_overload(self, *args, **kwargs):
            try:
                return super().load_overload(*args, **kwargs)
            except OSError:
                return None

        def save_overload(self, *args, **kwargs):
            try:
                super().save_overload(*args, **kwargs)
            except OSError:
                pass

    try:
        return LamfastFunctionCache(py_func)
    except Exception:  # pragma: no cover - numba internals changed: no caching
        return None


def _dispatcher(py_func, options):
    cache = options.pop("cache")
    disp = numba.njit(**options)(py_func)
    if cache:
        own = _function_cache(disp.py_func)  # in cache_dir(): NUMBA_CACHE_DIR wins there
        if own is not None:
            disp._cache = own
        # else: no caching rather than numba's default, the package's own __pycache__
    return disp


def njit(*args, **kwargs):
    """``numba.njit`` with lamfast's options; explicit keyword arguments win."""
    options = {"cache": CACHE, "fastmath": FASTMATH, "nogil": NOGIL}
    options.update(kwargs)
    if args and callable(args[0]) and len(args) == 1:
        return _dispatcher(args[0], options)
    if args:  # explicit signatures: numba compiles eagerly; keep numba's own caching
        return numba.njit(*args, **options)
    return lambda py_func: _dispatcher(py_func, dict(options))
