"""A one-line progress display on stderr for the kachery-* commands.

Shown only on a terminal, only for work that has taken more than SHOW_AFTER seconds, and never
with --quiet; piped output stays clean. It shows bytes, percentage, rate and where the bytes come
from (the node names its source in /loadFile progress frames).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

SHOW_AFTER = 1.0
REDRAW_EVERY = 0.2


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ProgressLine:
    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None,
                 force: bool = False):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = not quiet and (force or self.stream.isatty())
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def update(self, done: int, total: int = 0, source: str | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < SHOW_AFTER or now - self._drawn < REDRAW_EVERY:
            return
        self._drawn = now
        rate = done / max(now - self.started, 1e-3)
        parts = [self.label, human(done) + (f" of {human(total)} ({100 * done // total}%)" if total else ""),
                 f"{human(rate)}/s"]
        if source:
            parts.append(f"from {source}")
        line = "  ".join(parts)
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def __call__(self, done: int, total: int = 0, source: str | None = None) -> None:
        self.update(done, total, source)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
