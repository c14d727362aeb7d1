"""Proc subclasses for the timing tests: a method that sleeps a known time under a concurrency
limit of 1, and a parent whose children sleep, so every phase has a known lower bound."""
from __future__ import annotations

import time

from mongoengine import FloatField, IntField, StringField

from proc import Proc, process


class Napper(Proc):
    meta = {"collection": "test_napper"}
    seconds = FloatField(default=0.2)

    @process(limit=1, queue_timeout=600)
    def nap(self):
        time.sleep(self.seconds)  # the simulated work whose length the phases must show


class Brood(Proc):
    meta = {"collection": "test_brood"}
    n = IntField(default=2)
    seconds = FloatField(default=0.3)
    group = StringField(default="")

    @process(join="gather")
    def hatch(self):
        time.sleep(self.seconds)  # the parent's own first RUNNING spell
        for _ in range(self.n):
            chick = Chick(seconds=self.seconds)
            chick.save()
            self.spawn(chick.grow)

    def gather(self):
        time.sleep(self.seconds)  # the parent's second RUNNING spell (the join)


class Chick(Proc):
    meta = {"collection": "test_chick"}
    seconds = FloatField(default=0.3)

    @process
    def grow(self):
        time.sleep(self.seconds)


def naps_in_turn(seconds: float, n: int = 3) -> list:
    """``n`` Nappers of ``seconds`` called at once (their kind's limit is one, so they run in
    turn); returns them once each has ended."""
    docs = [Napper(seconds=seconds) for _ in range(n)]
    for d in docs:
        d.save()
    for d in docs:
        d.nap()
    for d in docs:
        d.block_until_complete(30)
    return docs


def seed_ended(cls, method: str, values, *, ago: float = 10.0, status: str = "SUCCESS", extra=None) -> None:
    """Ended documents of ``cls`` whose last attempt ran ``method`` with phases ``values``
    (each ``{phase: seconds}``), written directly as the ending write leaves them, and counted
    into the time buckets as the ending write counts them (``proc.machine.tally``; not for
    ``status`` RUNNING: a new attempt's old phases)."""
    from datetime import timedelta

    from proc.machine import tally
    from proc.timeutil import utcnow

    now = utcnow()
    end = now - timedelta(seconds=ago)
    cls._get_collection().insert_many([
        {"process_status": status, "current_process": method, "attempt": 1,
         "complete_time": end, "last_status_change": end,
         "phases": phases, **(extra or {})} for phases in values])
    if status in ("SUCCESS", "FAILURE"):
        for phases in values:
            tally.ended(cls._get_collection_name(), method, status, phases, end)
