"""Proc subclasses used by the core tests. Runs are counted in memory: the worker runs
in this process, so the counters show how often each method really ran."""
from __future__ import annotations

import collections
import threading

from mongoengine import IntField, StringField

from proc import Proc, ProcessFailure, process

runs: collections.Counter = collections.Counter()
joins: collections.Counter = collections.Counter()
_lock = threading.Lock()
gates: dict[str, threading.Event] = {}
barrier: dict[str, threading.Barrier] = {}
active = {"now": 0, "max": 0}


def count(counter, key):
    with _lock:
        counter[key] += 1


def reset_counters():
    runs.clear()
    joins.clear()
    gates.clear()
    barrier.clear()
    active.update(now=0, max=0)


class Job(Proc):
    meta = {"collection": "test_job"}
    label = StringField(default="")
    value = IntField(default=0)

    @process
    def noop(self):
        count(runs, str(self.pk))

    @process
    def add(self, amount, *, times=1):
        count(runs, str(self.pk))
        self.set_step(f"adding {amount} x {times}")
        self.value += amount * times
        self.save()

    @process
    def explode(self):
        count(runs, str(self.pk))
        raise ValueError("the input is broken")

    @process
    def refuse(self):
        raise ProcessFailure("first reason", "second reason")

    @process
    def wait_for_gate(self):
        count(runs, str(self.pk))
        gates[str(self.pk)].wait(timeout=30)  # the simulated work: blocks until the test opens it


class Limited(Proc):
    meta = {"collection": "test_limited"}

    @process(limit=4)
    def work(self):
        with _lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            count(runs, str(self.pk))
            gate = gates.get(str(self.pk)) or gates.get("limited")
            if gate is not None:
                gate.wait(timeout=30)
        finally:
            with _lock:
                active["now"] -= 1


class Child(Proc):
    meta = {"collection": "test_child"}
    fail = IntField(default=0)
    group = StringField(default="")

    @process
    def run(self):
        count(runs, str(self.pk))
        b = barrier.get(self.group)
        if b is not None:
            b.wait(timeout=30)  # every child finishes at the same moment
        if self.fail:
            raise RuntimeError(f"child {self.pk} failed on purpose")


class Parent(Proc):
    meta = {"collection": "test_parent"}
    n = IntField(default=3)
    failing = IntField(default=0)
    joined_with = IntField()

    def _spawn_children(self):
        for i in range(self.n):
            child = Child(fail=int(i < self.failing), group=str(self.pk))
            child.save()
            self.spawn(child.run)

    @process(join="collect")
    def fan_out(self):
        self._spawn_children()

    @process(join="collect", tolerate_child_failures=True)
    def fan_out_tolerant(self):
        self._spawn_children()

    @process
    def no_children(self):
        count(runs, str(self.pk))

    def collect(self):
        count(joins, str(self.pk))
        self.joined_with = Child.objects(group=str(self.pk), process_status="SUCCESS").count()
        self.save()
