r"""Progress of long work on one line: counts, rate and ETA.

`Progress` rewrites its line in place with `\r` when stderr is a terminal (as it was when
`verbosity.configure` ran), and writes a plain line every `interval_s` seconds otherwise (logs,
CI). `format_duration` is the one `H:MM:SS` formatter of the product.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from cxr_cli import verbosity


def format_duration(seconds: float) -> str:
    """`H:MM:SS`; "unknown" for infinite or NaN."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "unknown"
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts, rate and ETA of long work, on one line.

    On a terminal the line is rewritten in place (`\\r`) at most every `refresh_s` seconds; in
    logs and CI a plain line is written every `interval_s` seconds (through `logger` when one
    is given) and once at the end. Use as a context manager, or call `close()`.

    Example:
      with progress.Progress(total=len(rows), description="render", unit="images") as bar:
          for row in rows:
              ...
              bar.advance()

    Args:
      total: the number of items, or None when unknown (no percentage or ETA then).
      description: the line's first word(s).
      unit: what is counted, e.g. "images", "steps".
      stream: where the line goes; default `sys.stderr` at the time of writing.
      interactive: rewrite in place (True) or write plain lines (False); default: whether
        stderr was a terminal when `configure` ran (`interactive()`).
      interval_s: seconds between plain lines.
      refresh_s: seconds between in-place rewrites.
      logger: plain lines go to `logger.info` instead of `stream` (binaries that log).
      clock: time source (tests).
      start: when the work started, on `clock`'s scale; default now.
      final_line: in logs, write the final line on `close` even when the work was short.
    """

    def __init__(
        self,
        total: int | None,
        *,
        description: str = "progress",
        unit: str = "items",
        stream: TextIO | None = None,
        interactive: bool | None = None,
        interval_s: float = 30.0,
        refresh_s: float = 0.2,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        final_line: bool = False,
    ):
        if total is not None and total < 0:
            raise ValueError(f"Progress.total must be >= 0 or None, got {total}.")
        if interval_s <= 0:
            raise ValueError(f"Progress.interval_s must be > 0, got {interval_s}.")
        self.total = total
        self.description = description
        self.unit = unit
        self._stream = stream
        self._interactive = verbosity.interactive() if interactive is None else interactive
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._logger = logger
        self._clock = clock
        self._start = clock() if start is None else start  # Rates count from here.
        self._last_shown = None
        self._width = 0
        self._closed = False
        self._final_line = final_line
        self.done = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        """Adds `count` finished items."""
        self.update(self.done + count)

    def update(self, done: int, *, force: bool = False) -> None:
        """Sets the number of finished items and shows the line when it is due."""
        self.done = done
        now = self._clock()
        if self._interactive:
            due = self._last_shown is None or now - self._last_shown >= self._refresh_s
        else:
            due = (
                now - (self._last_shown if self._last_shown is not None else self._start) >= self._interval_s
            )
        if force or due:
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The progress text: `description: done/total unit (pct%), rate unit/s, ETA H:MM:SS`."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            text = f"{self.description}: {self.done:,}/{self.total:,} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            text = f"{self.description}: {self.done:,} {self.unit}"
        text += f", {_format_rate(rate)} {self.unit}/s"
        if self.total and self.done < self.total:
            text += f", ETA {format_duration((self.total - self.done) / rate if rate > 0 else float('inf'))}"
        else:
            text += f", {format_duration(elapsed)}"
        return text

    def close(self, message: str | None = None) -> None:
        """Ends the display with the final line (or `message`).

        In logs the final line is written only when a progress line was (the work was long),
        `final_line` was asked for or a `message` is given: short work adds no line there.
        """
        if self._closed:
            return
        self._closed = True
        text = message or self.line()
        if self._interactive:
            self._write("\r" + text.ljust(self._width) + "\n")
        elif message or self._final_line or self._last_shown is not None:
            self._emit(text)

    def clear(self) -> None:
        """Ends the display without a final line: erases the in-place line on a terminal.

        For work whose result is reported right after by other means (an epoch's steps, then
        the epoch line).
        """
        if self._closed:
            return
        self._closed = True
        if self._interactive and self._last_shown is not None:
            self._write("\r" + " " * self._width + "\r")

    def _show(self, now: float) -> None:
        self._last_shown = now
        text = self.line(now)
        if self._interactive:
            self._write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self._emit(text)

    def _emit(self, text: str) -> None:
        if self._logger is not None:
            self._logger.info("%s", text)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


def _format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    return f"{rate:.2f}"
