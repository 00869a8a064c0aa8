"""Progress of a long read or replay on stderr: silent for the first second, then about once a second.

On a terminal the line is rewritten in place; otherwise (a log, a pipe) each report is its own line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Throttled progress lines on ``stream``; ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        stream: TextIO | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        after_s: float = 1.0,
        every_s: float = 1.0,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._next_s = clock() + after_s
        self._every_s = every_s
        self._tty = bool(stream is not None and stream.isatty())
        self._shown = False

    def report(self, text: str) -> bool:
        """Show ``text`` if a report is due; returns whether it was shown."""
        now = self._clock()
        if self._stream is None or now < self._next_s:
            return False
        self._next_s = now + self._every_s
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
        else:
            self._stream.write(f"{text}\n")
        self._stream.flush()
        self._shown = True
        return True

    def done(self) -> None:
        """End the rewritten line on a terminal, so what follows starts on a line of its own."""
        if self._tty and self._shown and self._stream is not None:
            self._stream.write("\n")
            self._stream.flush()
        self._shown = False


def quiet() -> Progress:
    """A progress that never shows anything."""
    return Progress(None)
