"""A minimal progress bar on stderr: silent off a terminal, shown only for long work."""

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
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
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
        if elapsed < config.PROGRESS_AFTER_SECONDS or now - self._last < 0.2:
            return
        self._last = now
        self.shown = True
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
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
