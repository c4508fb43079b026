"""Progress lines of long commands (TF-free): a count, a rate and an ETA, redrawn in place on a
terminal, one line now and then otherwise (log files, CI). The training loop's step line and the
per-image line of ``evaluate.py`` / ``deblur.py`` share the formatting here."""

from __future__ import annotations

import math
import sys
import time


def duration(seconds) -> str:
    """``1h02m`` / ``3m07s`` / ``?`` (not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class CountProgress:
    """``<what> i/n (pct%) | <detail> | s/<unit> | ETA`` for a known number of items.

    On a terminal the line is redrawn in place (at most twice a second) and ends with a newline
    when the count is reached; elsewhere a line is written every ``every`` items (default: about
    ten lines per run) and at the end. ``out`` defaults to stderr, so stdout keeps results only.
    """

    def __init__(self, total: int | None, what: str = "image", out=None, every: int = 0):
        self.total, self.what = total, what
        self.out = out or sys.stderr
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.every = every or max(1, (total or 100) // 10)
        self.start = time.monotonic()
        self.first = None  # when the first item was done
        self.last_draw = 0.0

    def line(self, count: int, detail: str = "") -> str:
        now = time.monotonic()
        elapsed = now - self.start
        if count > 1 and self.first is not None:  # the first item carries start-up and warm-up
            per_item = (now - self.first) / (count - 1)
        else:
            per_item = elapsed / count if count else float("nan")
        if self.total:
            head = f"{self.what} {count}/{self.total} ({100.0 * count / self.total:5.1f}%)"
            eta = f"ETA {duration((self.total - count) * per_item)}"
        else:
            head, eta = f"{self.what} {count}", f"elapsed {duration(elapsed)}"
        parts = [head, detail] if detail else [head]
        return " | ".join([*parts, f"{per_item:.2f} s/{self.what}", eta])

    def update(self, count: int, detail: str = "") -> None:
        """Shows ``count`` items done (``detail``: e.g. the running mean PSNR)."""
        done = self.total is not None and count >= self.total
        now = time.monotonic()
        if self.first is None:
            self.first = now
        if self.tty:
            if not done and now - self.last_draw < 0.5:
                return
            self.out.write("\r\033[K" + self.line(count, detail) + ("\n" if done else ""))
        elif done or count % self.every == 0:
            self.out.write(self.line(count, detail) + "\n")
        else:
            return
        self.last_draw = now
        self.out.flush()

    def clear(self) -> None:
        """Clears the line on a terminal (before another stream writes to it)."""
        if self.tty:
            self.out.write("\r\033[K")
            self.out.flush()

    def message(self, text: str) -> None:
        """A line of its own (a per-image line), above the progress line on a terminal."""
        self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.out.flush()
