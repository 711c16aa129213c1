"""Progress of one coding run over all its stages: g_a's blocks, the entropy coder's
sequential steps and g_s's blocks, per band group.

On a terminal it is a tqdm bar; elsewhere (a batch job, a log file, a pipe) plain lines on
stderr, one when a stage starts, then one each time it passes another tenth of its work or
``LINE_SECONDS`` have gone by, and one when it ends:

    stcm: encode scene.tif: group 1/2 analysis 3/12 blocks
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LINE_SECONDS = 30.0
LINE_FRACTION = 0.1


class Progress:
    """Stages of work, each with a total, reported as they advance.

    Args:
        label: what is being done, e.g. ``"encode scene.tif"``.
        mode: "bar" (tqdm), "lines" (plain lines) or None (nothing).
        stream: where it goes (default: stderr at the time of each write).
    """

    def __init__(self, label: str, mode: str | None, stream=None):
        if mode not in ("bar", "lines", None):
            raise ValueError(f"mode must be 'bar', 'lines' or None, got {mode!r}")
        self.label, self.mode, self._stream = label, mode, stream
        self._bar = None
        self.stage_name, self.unit, self.total, self.done = "", "", 0, 0
        self._last_time, self._last_fraction = 0.0, 0.0

    @classmethod
    def choose(cls, label: str, show: bool | None, stream=None) -> Progress:
        """``show`` True or None: a bar on a terminal, lines elsewhere; False: nothing."""
        if show is False:
            return cls(label, None)
        out = stream if stream is not None else sys.stderr
        terminal = bool(getattr(out, "isatty", lambda: False)())
        return cls(label, "bar" if terminal else "lines", stream)

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def stage(self, name: str, total: int, unit: str) -> None:
        """Starts a stage of ``total`` ``unit``s (the previous one ends)."""
        self.stage_name, self.unit, self.total, self.done = name, unit, total, 0
        if self.mode == "bar":
            if self._bar is None:
                self._bar = tqdm(total=total, unit=unit, leave=False, file=self.stream)
            else:
                self._bar.reset(total=total)
            self._bar.unit = unit
            self._bar.set_description_str(f"{self.label}: {name}")
        elif self.mode == "lines":
            self._line()

    def add(self, total: int) -> None:
        """Makes the current stage ``total`` units longer (work found on the way)."""
        self.total += total
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "lines":
            fraction = self.done / self.total if self.total else 1.0
            if (self.done >= self.total or fraction - self._last_fraction >= LINE_FRACTION
                    or time.monotonic() - self._last_time >= LINE_SECONDS):
                self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self) -> None:
        self._last_time = time.monotonic()
        self._last_fraction = self.done / self.total if self.total else 1.0
        print(f"stcm: {self.label}: {self.stage_name} {self.done}/{self.total} {self.unit}",
              file=self.stream, flush=True)
