"""Proc subclasses for the partition tests (``tests/system/test_hosts.py``): they run on worker
hosts in network namespaces, which a cut may keep from the database, so each body records its
life in a file the hosts share (``PROC_TEST_RUNS_FILE``; namespaces share the filesystem), one
JSON line per event with ``time.monotonic()`` (one clock for every process of this machine, and
one that the clock-shift hook of ``tests/hosts_clock`` leaves alone): ``start``, ``alive`` every
0.1 s, then ``end``, or ``stopped`` when ``set_step()`` raised ``ProcessCancelled``. A copy's
run is the interval from its ``start`` to its last line.

Thresholds are short (heartbeat timeout 4 s; the deployment sets PROC_HEARTBEAT_INTERVAL=0.3
and PROC_DB_OUTAGE_TIMEOUT=2, so the lease is 2 s, below 4 - 0.3 - 1).
"""
from __future__ import annotations

import json
import os
import time

from mongoengine import FloatField

from proc import Proc, process
from proc.exceptions import ProcessCancelled

SETTINGS = dict(queue_timeout=3, heartbeat_timeout=4, expected_duration=60, monitor_interval=1,
                max_attempts=6)


def record(doc, event: str) -> None:
    line = json.dumps({"job": str(doc.pk), "attempt": doc.attempt, "event": event, "pid": os.getpid(),
                       "host": os.environ.get("PROC_TEST_HOST", "?"), "t": time.monotonic()})
    with open(os.environ["PROC_TEST_RUNS_FILE"], "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _body(doc, report: bool) -> None:
    record(doc, "start")
    started = time.monotonic()
    hold = doc.hold if doc.attempt == 1 or doc.later_hold is None else doc.later_hold
    try:
        while time.monotonic() - started < hold:
            if report:
                doc.set_step(f"{time.monotonic() - started:.1f} s in")
            record(doc, "alive")
            time.sleep(0.1)  # the simulated work between two reports
    except ProcessCancelled:
        record(doc, "stopped")
        raise
    record(doc, "end")


class HostJob(Proc):
    """Works for ``hold`` seconds, reporting a step every 0.1 s."""

    meta = {"collection": "host_job"}
    hold = FloatField(default=1.0)
    later_hold = FloatField(default=None)
    """How long attempts after the first work (default: ``hold``)."""

    @process(**SETTINGS)
    def run(self):
        _body(self, report=True)


class HostSilent(Proc):
    """Works for ``hold`` seconds without ever reporting (only the worker can stop it)."""

    meta = {"collection": "host_silent"}
    hold = FloatField(default=1.0)
    later_hold = FloatField(default=None)

    @process(**SETTINGS)
    def run(self):
        _body(self, report=False)


def runs(path: str) -> dict:
    """job id -> [(attempt, host, pid, start, last, last event)], one per copy, oldest first."""
    copies: dict = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return {}
    for line in lines:
        key = (line["job"], line["attempt"], line["host"], line["pid"])
        first = copies.setdefault(key, [line["t"], line["t"], line["event"]])
        first[1], first[2] = line["t"], line["event"]
    out: dict = {}
    for (job, attempt, host, pid), (start, last, event) in sorted(copies.items(), key=lambda kv: kv[1][0]):
        out.setdefault(job, []).append((attempt, host, pid, start, last, event))
    return out
