"""Worker processes that never outlive the run that started them.

A ``kill -9`` of ``lamfast reproduce -j 2`` gives its worker processes no chance to be told to
stop; without help they would keep computing, orphaned. On Linux each worker asks the kernel to
send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and checks that the parent is
still the one that started it (it may have died before the request was made).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Initializer of a worker process: end it when ``parent_pid`` ends (Linux; else a no-op)."""
    if not hasattr(os, "getppid"):  # pragma: no cover - not POSIX
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl (macOS): best effort only
        return
    if os.getppid() != parent_pid:  # the parent died before the request: stop now
        os._exit(1)
