"""Proc subclasses for the end-to-end tests: they run in real worker processes, so each
body records every run of itself in a collection of its own (``e2e_runs``), where the test
process can count them.

A body "works" for ``hold`` seconds, reporting a step every 0.1 s (``set_step``, which
only hands the step to the heartbeat thread), and ends with the step ``"last step"``.
While ``wait_for_gate`` is set it also waits until the test opens its gate (a document in
``e2e_gates``), so a test can kill or stop things while the body is known to be running.
A body whose ``fail_with`` is set ends by failing with that error.
"""
from __future__ import annotations

import os
import socket
import time

from mongoengine import BooleanField, FloatField, StringField

from proc import Proc, ProcessFailure, process
from proc.store import db
from proc.timeutil import utcnow

RUNS = "e2e_runs"
GATES = "e2e_gates"

#: Thresholds short enough for tests; PROC_KIND_SETTINGS overrides them per test.
FAST = dict(queue_timeout=3, heartbeat_timeout=4, expected_duration=30, monitor_interval=1,
            max_attempts=3)


def _body(doc) -> None:
    runs = db.database()[RUNS]
    runs.insert_one({"job": doc.pk, "collection": doc._get_collection_name(), "attempt": doc.attempt,
                     "pid": os.getpid(), "host": socket.gethostname(), "time": utcnow()})
    started, n = time.monotonic(), 0
    while True:
        n += 1
        doc.set_step(f"step {n}")
        if time.monotonic() - started >= doc.hold and not (
                doc.wait_for_gate and db.database()[GATES].find_one({"_id": str(doc.pk)}) is None):
            break
        time.sleep(0.1)  # the simulated work between two progress reports
    doc.set_step("last step")
    if getattr(doc, "fail_with", ""):
        raise ProcessFailure(doc.fail_with)


class E2EJob(Proc):
    """A plain process."""

    meta = {"collection": "e2e_job"}
    label = StringField(default="")
    hold = FloatField(default=0.0)
    wait_for_gate = BooleanField(default=False)
    fail_with = StringField(default="")

    @process(**FAST)
    def run(self):
        _body(self)


class E2ELimited(Proc):
    """A process kind of which at most 4 hold a slot at once."""

    meta = {"collection": "e2e_limited"}
    hold = FloatField(default=0.3)
    wait_for_gate = BooleanField(default=False)

    @process(limit=4, **FAST)
    def run(self):
        _body(self)


def open_gate(doc) -> None:
    db.database()[GATES].insert_one({"_id": str(doc.pk)})


def runs_of(doc) -> list[dict]:
    """Every recorded run of ``doc``'s body, oldest first."""
    return list(db.database()[RUNS].find({"job": doc.pk}, {"_id": 0}).sort("time", 1))


class E2ESilent(Proc):
    """A method that never reports progress: it records its run, then works without a
    ``set_step()`` for ``hold`` seconds, and records that it ended (which a forced stop
    prevents)."""

    meta = {"collection": "e2e_silent"}
    hold = FloatField(default=600.0)

    @process(**{**FAST, "heartbeat_timeout": 60})
    def run(self):
        runs = db.database()[RUNS]
        runs.insert_one({"job": self.pk, "collection": "e2e_silent", "attempt": self.attempt,
                         "pid": os.getpid(), "host": socket.gethostname(), "time": utcnow()})
        started = time.monotonic()
        while time.monotonic() - started < self.hold:
            time.sleep(0.1)  # the simulated work, never reported
        runs.insert_one({"job": self.pk, "collection": "e2e_silent", "ended": True, "time": utcnow()})
