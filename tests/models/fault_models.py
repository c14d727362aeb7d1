"""Proc subclasses and an in-process worker for the monitor and fault-injection tests.

Thresholds are about a second so faults are detected fast. Runs are recorded in memory
(the workers run in this process), so a test sees exactly how often each method ran, on
which worker and for which attempt.
"""
from __future__ import annotations

import collections
import threading

from mongoengine import IntField, StringField

from proc import Proc, process

FAST = dict(queue_timeout=1, heartbeat_timeout=1, expected_duration=2, monitor_interval=0.5)

_lock = threading.Lock()
#: (collection, id) -> [(attempt, host), ...] for every run of a process method.
runs: dict = collections.defaultdict(list)
#: id -> number of joins run.
joins: collections.Counter = collections.Counter()
#: id (or "group:<parent id>" for children) -> Event the method waits on (the simulated
#: work) before it returns.
gates: dict[str, threading.Event] = {}
#: gate key -> attempts that wait on the gate (default: only the first).
blocking: dict[str, set] = {}
#: id -> Event set when the method has returned (also for superseded attempts).
returned: dict[str, threading.Event] = collections.defaultdict(threading.Event)


def reset():
    with _lock:
        runs.clear()
        joins.clear()
        blocking.clear()
        returned.clear()
        for gate in gates.values():
            gate.set()  # never leave a worker thread blocked behind a finished test
        gates.clear()


def runs_of(doc) -> list:
    with _lock:
        return list(runs[(doc._get_collection_name(), str(doc.pk))])


def _run(doc, group: str | None = None):
    key = str(doc.pk)
    with _lock:
        runs[(doc._get_collection_name(), key)].append((doc.attempt, doc.worker_hostname))
    gate_key = key if key in gates or group is None else f"group:{group}"
    gate = gates.get(gate_key)
    try:
        if gate is not None and doc.attempt in blocking.get(gate_key, {1}):
            gate.wait(timeout=60)  # the simulated work: blocks until the test releases it
            # Writes a superseded attempt would make after its worker "died":
            doc.set_step("late step")
            doc.warn("late warning")
    finally:
        returned[key].set()


class Stall(Proc):
    """A process whose method may block on a gate the test controls."""

    meta = {"collection": "fault_stall"}
    label = StringField(default="")

    @process(recovery="retry", max_attempts=2, **FAST)
    def work_retry(self):
        _run(self)

    @process(recovery="fail", **FAST)
    def work_fail(self):
        _run(self)

    @process(recovery="alert", **FAST)
    def work_alert(self):
        _run(self)

    @process(recovery="retry", max_attempts=2, limit=1, **FAST)
    def work_limited(self):
        _run(self)


class FaultChild(Proc):
    meta = {"collection": "fault_child"}
    group = StringField(default="")

    @process(recovery="alert", **FAST)
    def run_alert(self):
        _run(self, self.group)

    @process(recovery="fail", **FAST)
    def run_fail(self):
        _run(self, self.group)


class FaultParent(Proc):
    """Spawns ``n`` children of method ``child_method``; its join counts in ``joins``."""

    meta = {"collection": "fault_parent"}
    n = IntField(default=2)
    child_method = StringField(default="run_fail")
    joined = IntField(default=0)

    @process(join="collect", recovery="fail", **FAST)
    def fan_out(self):
        self._spawn()

    @process(join="collect", recovery="fail", **dict(FAST, expected_duration=6))
    def fan_out_patient(self):
        """Like fan_out, with more time than its children: their own monitors act first."""
        self._spawn()

    def _spawn(self):
        with _lock:
            runs[(self._get_collection_name(), str(self.pk))].append((self.attempt, self.worker_hostname))
        for _ in range(self.n):
            child = FaultChild(group=str(self.pk))
            child.save()
            self.spawn(getattr(child, self.child_method))

    def collect(self):
        with _lock:
            joins[str(self.pk)] += 1
