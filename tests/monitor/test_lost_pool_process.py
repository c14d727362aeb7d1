"""A worker that sees one of its own pool processes die recovers the attempt at once.

The judgement (``proc.run.pools.lost_here``: this worker's attempt, a pid that no longer
runs, or that another process took since) and the recovery it leads to
(``proc.tasks.recover_if_lost_here`` -> ``proc.monitor.recovery.recover_lost``), on
documents whose pool process is a real process that has exited. The whole thing on real
prefork workers (SIGKILL of a pool process) is in ``tests/system/test_e2e.py``.

Messages go to a private redis-server that no worker consumes, so every state a test sees
is the one the recovery wrote.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bson import json_util

from fault_models import Stall
from proc import registry, tasks
from proc.monitor import recovery
from proc.run import pools
from proc.status import HEARTBEAT_LOST
from proc.timeutil import utcnow

HOST = "w1@test"


pytestmark = pytest.mark.usefixtures("idle_app")


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running(method: str, *, host: str = HOST, **fields) -> dict:
    """A Stall RUNNING at attempt 1 on worker ``host``, claimed by pool process ``worker_pid``."""
    doc = Stall(label=method)
    doc.save()
    now = utcnow()
    state = {"process_status": "RUNNING", "attempt": 1, "current_process": method, "last_status_change": now,
             "celery_task_id": f"task-{doc.pk}", "process_args": {"args": [], "kwargs": {}}, "heartbeat": now,
             "worker_hostname": host, "worker_pool": "prefork",
             "history": [{"status": "PENDING", "event": "request", "attempt": 1, "time": now},
                         {"status": "RUNNING", "event": "claim", "attempt": 1, "time": now}], **fields}
    coll = Stall._get_collection()
    coll.update_one({"_id": doc.pk}, {"$set": state})
    return coll.find_one({"_id": doc.pk})


def reread(raw: dict) -> dict:
    return Stall._get_collection().find_one({"_id": raw["_id"]})


def redelivered(raw: dict, host: str = HOST):
    """What the worker ``host`` does with the message of ``raw``'s attempt that finds nothing to claim."""
    return tasks.recover_if_lost_here("fault_stall", json_util.dumps(raw["_id"]), raw["current_process"],
                                      raw["attempt"], host)


# -- the judgement --------------------------------------------------------------------------


def test_a_process_is_named_by_its_pid_and_start_time(dead_pid):
    me = os.getpid()
    start = pools.process_start(me)
    assert isinstance(start, int) and start > 0
    assert pools.runs(me, start) and pools.runs(me, None)
    assert not pools.runs(me, start + 1)  # the pid now names a process that started later
    assert not pools.runs(dead_pid, None) and pools.process_start(dead_pid) is None


def test_only_this_workers_running_attempt_with_a_gone_process_is_lost_here(dead_pid):
    me, start = os.getpid(), pools.process_start(os.getpid())
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = running("work_retry", worker_pid=sibling.pid, worker_pid_start=pools.process_start(sibling.pid))
        assert pools.lost_here(alive, HOST) is None
        reused = running("work_retry", worker_pid=sibling.pid, worker_pid_start=pools.process_start(sibling.pid) - 1)
        assert pools.lost_here(reused, HOST) == f"pool process {sibling.pid} of worker {HOST} died (seen by that worker)"
    finally:
        sibling.kill()
        sibling.wait()
    dead = running("work_retry", worker_pid=dead_pid)
    assert pools.lost_here(dead, HOST).startswith(f"pool process {dead_pid} of worker {HOST} died")
    assert pools.lost_here(dead, "w2@elsewhere") is None  # another host's pids mean nothing here
    assert pools.lost_here({**dead, "process_status": "SUCCESS"}, HOST) is None
    assert pools.lost_here(running("work_retry", worker_pid=me, worker_pid_start=start), HOST) is None
    assert pools.lost_here(running("work_retry"), HOST) is None  # no pid recorded


# -- the recovery -----------------------------------------------------------------------------


def test_retry_policy_sends_a_new_attempt_at_once_by_the_worker_and_counts_max_attempts(dead_pid):
    raw = running("work_retry", worker_pid=dead_pid)
    assert redelivered(raw) == "retried"
    after = reread(raw)
    assert (after["process_status"], after["attempt"]) == ("DISPATCHED", 2)
    redispatch = after["history"][-2]
    assert (redispatch["event"], redispatch["by"], redispatch["note"]) == (
        "redispatch", f"worker:{HOST}", f"worker:{HOST}: {HEARTBEAT_LOST}")
    [warning] = after["warnings"]
    assert warning == (f"worker:{HOST}: pool process {dead_pid} of worker {HOST} died (seen by that worker); "
                       f"sent again (attempt 2 of 2)")
    [record] = recovery.recent_recoveries()
    assert (record["reason"], record["action"], record["attempt"]) == (HEARTBEAT_LOST, "retried", 1)

    # attempt 2 claimed by the same worker, and its pool process dies too: max_attempts=2
    Stall._get_collection().update_one({"_id": raw["_id"]}, {"$set": {
        "process_status": "RUNNING", "worker_hostname": HOST, "worker_pid": dead_pid, "heartbeat": utcnow()}})
    second = reread(raw)
    assert redelivered(second) == "failed"
    after = reread(raw)
    assert (after["process_status"], after["attempt"]) == ("FAILURE", 2)
    assert after["errors"][-1].endswith("gave up after 2 attempt(s) (max_attempts=2)")
    assert after["history"][-1]["by"] == f"worker:{HOST}"


def test_fail_and_alert_policies_apply_their_heartbeat_lost_column(dead_pid):
    failed = running("work_fail", worker_pid=dead_pid)
    alerted = running("work_alert", worker_pid=dead_pid)
    assert redelivered(failed) == "failed" and redelivered(alerted) == "alerted"
    after = reread(failed)
    assert after["process_status"] == "FAILURE" and after["attempt"] == 1
    assert after["errors"] == [f"pool process {dead_pid} of worker {HOST} died (seen by that worker)"]
    left = reread(alerted)
    assert left["process_status"] == "RUNNING"  # the alert policy warns and leaves it
    [warning] = left["warnings"]
    assert warning.startswith(f"worker:{HOST} (attempt 1): {HEARTBEAT_LOST}: pool process {dead_pid}")
    assert warning.endswith("left alone (recovery policy: alert)")
    assert redelivered(alerted) == "already reported" and reread(alerted)["warnings"] == [warning]


def test_another_hosts_attempt_or_a_live_process_is_left_to_the_monitor(dead_pid):
    elsewhere = running("work_retry", host="w2@elsewhere", worker_pid=dead_pid)
    alive = running("work_retry", worker_pid=os.getpid(), worker_pid_start=pools.process_start(os.getpid()))
    assert redelivered(elsewhere) is None and redelivered(alive) is None
    for raw in (elsewhere, alive):
        assert reread(raw) == raw
    assert recovery.recent_recoveries() == []


def test_a_heartbeat_written_since_the_read_stops_the_recovery(dead_pid):
    raw = running("work_retry", worker_pid=dead_pid)
    stale = {**raw, "heartbeat": raw["heartbeat"].replace(year=2000)}  # what the worker read
    kind = registry.kind(Stall, "work_retry")
    outcome = recovery.recover_lost(kind, stale, "pool process died", by=f"worker:{HOST}")
    assert outcome.action == recovery.Action.LOST_RACE
    assert reread(raw)["process_status"] == "RUNNING" and reread(raw)["attempt"] == 1
