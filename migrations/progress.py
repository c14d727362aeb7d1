"""How a run shows progress: a rich bar on a terminal, plain lines otherwise, or nothing."""
from __future__ import annotations

import sys
import time

from proc.timeutil import format_age


class Progress:
    """Silent base: the Python API's default."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None:
        """The current collection is done."""

    def close(self) -> None:
        """The run is over."""


class Lines(Progress):
    """Plain lines (logs, pipes): at most one per ``interval`` seconds per collection, plus the last."""

    def __init__(self, stream=None, interval: float = 5.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.label, self.total, self.done, self.t0, self.shown = "", 0, 0, 0.0, 0.0

    def start(self, label, total):
        self.label, self.total, self.done = label, total, 0
        self.t0 = self.shown = self.clock()
        self._line()

    def advance(self, n):
        self.done += n
        if self.clock() - self.shown >= self.interval:
            self.shown = self.clock()
            self._line()

    def finish(self):
        if self.label:
            self._line()
        self.label = ""

    def _line(self):
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate and self.total >= self.done else None
        print(f"{self.label}: {self.done}/{self.total} documents, {rate:,.0f} docs/s, "
              f"ETA {format_age(eta)}", file=self.stream, flush=True)


class Bar(Progress):
    """A rich progress bar with documents/s and ETA (on a terminal)."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                   TextColumn, TimeRemainingColumn)

        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"),
                                TimeRemainingColumn(), console=console or Console(stderr=True),
                                transient=False)
        self.task = None
        self.started = False
        self.t0 = 0.0
        self.done = 0

    def start(self, label, total):
        if not self.started:
            self.bar.start()
            self.started = True
        self.task = self.bar.add_task(label, total=total, rate="")
        self.t0, self.done = time.monotonic(), 0

    def advance(self, n):
        self.done += n
        rate = self.done / max(time.monotonic() - self.t0, 1e-9)
        self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} docs/s")

    def close(self):
        if self.started:
            self.bar.stop()
            self.started = False
