"""One progress display for long work (a run's training, a sweep): a tqdm bar with an ETA on a terminal;
elsewhere (a log file, a pipe, CI) plain lines, at most one every ``every_s`` seconds and one at the end,
never redraws."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


EVERY_S = 10.0  # seconds between plain lines


class Progress:
    """``total`` units of work, ``initial`` of them done already; :meth:`update` as they finish."""

    def __init__(self, total: int, unit: str, desc: str, initial: int = 0, file: TextIO | None = None,
                 every_s: float | None = None, enabled: bool = True) -> None:
        self.total, self.unit, self.desc, self.done, self.start_done = total, unit, desc, initial, initial
        self.file, self.enabled = file or sys.stderr, enabled
        self.every_s = EVERY_S if every_s is None else every_s
        self.status, self.t0, self.last, self.shown = "", time.monotonic(), float("-inf"), None
        self.bar = None
        if enabled and getattr(self.file, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, file=self.file, dynamic_ncols=True)

    def update(self, n: int = 0, status: str | None = None, desc: str | None = None) -> None:
        """``n`` more units done; ``status`` (e.g. ``best val mIoU 0.71``) and ``desc`` replace the old ones."""
        self.done += n
        self.status = self.status if status is None else status
        self.desc = self.desc if desc is None else desc
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(self.desc, refresh=False)
            self.bar.set_postfix_str(self.status, refresh=False)
            self.bar.update(n)
        elif time.monotonic() - self.last >= self.every_s:
            self.line()

    def eta(self) -> float | None:
        """Seconds left at the rate of the units done in this process (None before the first one)."""
        done = self.done - self.start_done
        return None if done <= 0 else (time.monotonic() - self.t0) / done * max(self.total - self.done, 0)

    def line(self) -> None:
        """Print one plain progress line."""
        eta = self.eta()
        parts = [self.desc, f"{self.done}/{self.total} {self.unit}", self.status,
                 f"elapsed {duration(time.monotonic() - self.t0)}", f"ETA {duration(eta)}" if eta is not None else ""]
        print("  ".join(p for p in parts if p), file=self.file, flush=True)
        self.last, self.shown = time.monotonic(), (self.done, self.status, self.desc)

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        """End the display (plain output: a last line with the final count)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.shown != (self.done, self.status, self.desc):
            self.line()
