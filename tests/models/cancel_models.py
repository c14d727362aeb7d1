"""Proc subclasses for the cancel tests: bodies that loop, counted in memory (the worker
runs in this process), each recording how often its body and its ``finally`` ran."""
from __future__ import annotations

import collections
import threading
import time

from mongoengine import FloatField, IntField, StringField

from proc import Proc, process

joins: collections.Counter = collections.Counter()
runs: collections.Counter = collections.Counter()
finals: collections.Counter = collections.Counter()
stopped_at: dict[str, float] = {}
_lock = threading.Lock()


def _count(counter, key):
    with _lock:
        counter[key] += 1


class Looper(Proc):
    meta = {"collection": "test_looper"}
    style = StringField(default="steps")  # steps | swallow | ask | silent (never reports)
    seconds = FloatField(default=30.0)

    @process
    def loop(self):
        key = str(self.pk)
        _count(runs, key)
        try:
            started, n = time.monotonic(), 0
            while time.monotonic() - started < self.seconds:
                n += 1
                if self.style == "ask":
                    if self.cancel_requested():
                        return
                elif self.style == "silent":
                    pass
                elif self.style == "swallow":
                    try:
                        self.set_step(f"step {n}")
                    except Exception:  # user code that catches everything
                        pass
                else:
                    self.set_step(f"step {n}")
                time.sleep(0.1)  # the simulated work between two progress reports
        finally:
            stopped_at[key] = time.monotonic()
            _count(finals, key)


class Branch(Proc):
    """Starts ``width`` Loopers (or, at depth > 0, Branches) and waits for them."""

    meta = {"collection": "test_branch"}
    depth = IntField(default=0)
    width = IntField(default=2)

    @process(join="finish")
    def grow(self):
        for _ in range(self.width):
            if self.depth:
                child = Branch(depth=self.depth - 1, width=self.width)
                child.save()
                self.spawn(child.grow)
            else:
                child = Looper()
                child.save()
                self.spawn(child.loop)

    def finish(self):
        _count(joins, str(self.pk))
