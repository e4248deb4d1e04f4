"""Send a job's logging and stderr to its rule log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to_file(path: str | Path) -> None:
    """Route ``logging`` (INFO and up) and anything printed to stderr into ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Progress:
    """Progress of a long loop in the job's log: done / total, rate, time left, at most every ``every_s``."""

    def __init__(self, total: int, what: str, *, unit: str = "rows", every_s: float = 30.0,
                 logger: logging.Logger | None = None) -> None:
        import time

        self._clock = time.monotonic
        self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
        self.done = 0
        self._log = logger or logging.getLogger("actbridge.progress")
        self._start = self._last = self._clock()
        self._log.info("%s: %d %s to do", what, total, unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            elapsed = max(now - self._start, 1e-9)
            rate = self.done / elapsed
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            self._log.info("%s: %d/%d %s (%.0f%%), %.2f %s/s, %s elapsed, about %s left", self.what, self.done,
                           self.total, self.unit, 100.0 * self.done / max(self.total, 1), rate, self.unit,
                           _duration(elapsed), _duration(left))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
