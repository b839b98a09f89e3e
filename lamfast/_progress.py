"""Progress of long work on stderr: a bar on a terminal, plain lines in a log, only when long.

On a terminal the bar is redrawn in place. Off a terminal (a log file, a CI job) a redrawn bar
would be garbage, and silence would look like a hang: when ``config.PROGRESS_PLAIN`` is set (the
command line sets it; library calls stay silent off a terminal) a plain line is written every
``config.PROGRESS_PLAIN_SECONDS``. Nothing is shown for work shorter than
``config.PROGRESS_AFTER_SECONDS``; ``enabled=False`` (``--no-progress``) shows nothing at all.
"""

from __future__ import annotations

import sys
import time

from . import config


class Progress:
    """Context manager; ``update(k)`` advances by ``k`` units of ``total``."""

    def __init__(self, total: float, label: str = "", enabled: bool | None = None, stream=None):
        self.total = float(total) if total else 0.0
        self.label = label
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled is None:
            enabled = tty or bool(config.PROGRESS_PLAIN)
        self.enabled = enabled
        self.plain = not tty
        self.done = 0.0
        self.start = time.perf_counter()
        self.shown = False
        self._last = 0.0

    def __enter__(self):
        return self

    def update(self, k: float) -> None:
        self.done += k
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        every = config.PROGRESS_PLAIN_SECONDS if self.plain else 0.2
        if elapsed < config.PROGRESS_AFTER_SECONDS or now - self._last < every:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        if self.plain:
            self.stream.write(
                f"{self.label}: {self.done:,.0f} of {self.total:,.0f} ({100 * frac:.1f}%), "
                f"{elapsed:,.0f} s, eta {eta:,.0f} s\n"
            )
        else:
            self.shown = True
            bar = "#" * int(30 * frac)
            self.stream.write(
                f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}% {rate:,.0f}/s eta {eta:,.0f}s "
            )
        self.stream.flush()

    def __exit__(self, *exc):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
        return False
