"""Fault injection on a real Redis broker with real (in-process) Celery workers.

Every test here runs on a private redis-server (never the shared one) and its own
workers, injects one fault, and asserts the final state of every process involved:
nothing lost, nothing run twice, and the recovery written on the process. The per-process
monitor checks are real Celery messages with a countdown; where a test needs a sweep it
calls ``monitor.sweep()`` or ``procctl monitor --once``.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest

import fault_models as fm
from support import make_test_app
from fault_models import FaultChild, FaultParent, Stall
from proc.run.inprocess import InProcessWorker
from proc import BrokerUnavailable, config, monitor, registry
from proc.monitor import recovery, stuck
from proc.run import checks, dispatch, execution, messaging
from proc.timeutil import utcnow
from support import RedisServer, fault_models_app, wait_for

pytestmark = pytest.mark.timeout(90)

_names = iter(range(1, 10**6))


@pytest.fixture
def fault_app(private_redis):
    with fault_models_app(private_redis.url) as app:
        yield app


@pytest.fixture
def workers(fault_app):
    """Start in-process workers on the private broker; all are stopped after the test."""
    started: list[InProcessWorker] = []

    def start(name: str | None = None) -> InProcessWorker:
        w = InProcessWorker(fault_app, name or f"w{next(_names)}@faults").start()
        started.append(w)
        return w

    yield start
    fm.reset()  # releases every gate, so no worker thread stays blocked
    for w in started:
        if w.thread is not None and w.thread.is_alive():
            w.stop()


@pytest.fixture(autouse=True)
def _clean_counters():
    fm.reset()
    yield
    fm.reset()


def gate(doc, attempts=(1,)) -> threading.Event:
    event = fm.gates[str(doc.pk)] = threading.Event()
    fm.blocking[str(doc.pk)] = set(attempts)
    return event


def status(doc, wanted, attempt=None):
    doc.reload_status()
    return doc.process_status == wanted and (attempt is None or doc.attempt == attempt)


def events(doc) -> list[tuple]:
    """(status, attempt, by) of each transition, without DISPATCHED: a worker may claim a
    message before the sender has written DISPATCHED, and then that write never happens."""
    return [(h["status"], h["attempt"], h.get("by")) for h in doc.history if h["status"] != "DISPATCHED"]


def assert_late_writes_changed_nothing(doc, caplog):
    """Release the superseded method; what it writes after that must change nothing."""
    before = (doc.reload_status().process_status, doc.attempt, list(doc.history), doc.current_process_step,
              list(doc.warnings), list(doc.errors))
    fm.gates[str(doc.pk)].set()
    wait_for(fm.returned[str(doc.pk)].is_set, timeout=10, message="the blocked method to return")
    wait_for(lambda: "was superseded while it ran" in caplog.text, timeout=10,
             message="the superseded attempt's final write to be refused")
    after = (doc.reload_status().process_status, doc.attempt, list(doc.history), doc.current_process_step,
             list(doc.warnings), list(doc.errors))
    assert after == before
    assert "late warning" not in doc.warnings and doc.current_process_step != "late step"


# -- a worker that dies mid-process ---------------------------------------------------------


def blocked_on_dying_worker(workers, method: str, attempts=(1,)) -> Stall:
    """A Stall whose ``method`` blocks on worker a@faults, which is then killed.

    Its expected duration is 5 s (FAST's 2 s otherwise): the check at the deadline must find
    the heartbeat lost (1 s), so the kill must come more than a heartbeat timeout before the
    deadline. With 2 s, a loaded machine that took over a second from the claim to the kill
    had the check find a fresh heartbeat and end it for overrunning instead (one CI-like run)."""
    config.configure(kind_settings={f"fault_stall.{method}": {"expected_duration": 5}})
    registry.forget_settings()
    a = workers("a@faults")
    job = Stall(label=method)
    job.save()
    gate(job, attempts)
    getattr(job, method)()
    wait_for(lambda: status(job, "RUNNING", attempt=1), message="attempt 1 running on a@faults")
    assert job.worker_hostname == "a@faults"
    a.kill()  # the method stays blocked; its heartbeat stops; it never reports back
    return job


def test_dead_worker_mid_process_is_retried_as_a_new_attempt_and_its_late_writes_change_nothing(
        workers, caplog):
    caplog.set_level(logging.INFO)
    job = blocked_on_dying_worker(workers, "work_retry")
    started = time.monotonic()
    workers("b@faults")
    # heartbeat_timeout 1 s, expected_duration 5 s: the check at the deadline finds it.
    wait_for(lambda: status(job, "SUCCESS", attempt=2), timeout=15, message="attempt 2 to succeed")
    assert time.monotonic() - started < 13  # the deadline (5 s) and a new attempt, not minutes
    assert fm.runs_of(job) == [(1, "a@faults"), (2, "b@faults")]  # the redelivered attempt-1 message ran nothing
    assert events(job) == [("PENDING", 1, None), ("RUNNING", 1, None),
                           ("PENDING", 2, "monitor"), ("RUNNING", 2, None), ("SUCCESS", 2, None)]
    [redispatch] = [h for h in job.history if h["event"] == "redispatch"]
    assert redispatch["note"] == "monitor: worker heartbeat lost"
    [warning] = job.warnings
    assert warning.startswith("monitor: worker heartbeat lost after ") and "on host a@faults" in warning
    assert warning.endswith("sent again (attempt 2 of 2)")
    assert job.errors == []
    [record] = wait_for(recovery.recent_recoveries, timeout=5, message="the recovery record")
    assert (record["reason"], record["action"], record["attempt"]) == (stuck.HEARTBEAT_LOST, monitor.Action.RETRIED, 1)
    assert "monitor: fault_stall.work_retry" in caplog.text  # logged too
    assert_late_writes_changed_nothing(job, caplog)
    assert fm.runs_of(job) == [(1, "a@faults"), (2, "b@faults")]


def test_dead_worker_mid_process_fails_by_policy_with_the_reason(workers, caplog):
    job = blocked_on_dying_worker(workers, "work_fail")
    workers("b@faults")
    wait_for(lambda: status(job, "FAILURE"), timeout=15, message="the monitor to fail it")
    assert job.attempt == 1 and fm.runs_of(job) == [(1, "a@faults")]
    [error] = job.errors
    assert error.startswith("worker heartbeat lost after ") and error.endswith(" s on host a@faults")
    assert events(job)[-1] == ("FAILURE", 1, "monitor")
    assert job.history[-1]["note"] == "monitor: worker heartbeat lost"
    assert_late_writes_changed_nothing(job, caplog)


def test_a_retried_process_whose_workers_keep_dying_fails_after_max_attempts(workers, caplog):
    job = blocked_on_dying_worker(workers, "work_retry", attempts=(1, 2))
    b = workers("b@faults")
    wait_for(lambda: status(job, "RUNNING", attempt=2), timeout=15, message="attempt 2 running")
    b.kill()
    workers("c@faults")
    wait_for(lambda: status(job, "FAILURE"), timeout=15, message="the monitor to give up")
    assert job.attempt == 2
    assert fm.runs_of(job) == [(1, "a@faults"), (2, "b@faults")]
    [error] = job.errors
    assert "on host b@faults" in error and error.endswith("gave up after 2 attempt(s) (max_attempts=2)")
    assert [e[:2] for e in events(job)] == [("PENDING", 1), ("RUNNING", 1), ("PENDING", 2),
                                            ("RUNNING", 2), ("FAILURE", 2)]
    fm.gates[str(job.pk)].set()
    wait_for(lambda: caplog.text.count("was superseded while it ran") >= 2, timeout=10,
             message="both superseded attempts to end")
    assert job.reload_status().process_status == "FAILURE" and job.attempt == 2
    assert fm.runs_of(job) == [(1, "a@faults"), (2, "b@faults")]


# -- the broker --------------------------------------------------------------------------------


def test_broker_stopped_between_pending_and_dispatched_runs_the_process_once_it_is_back():
    server = RedisServer().start()
    app = make_test_app(server.url, broker_connection_timeout=1)
    messaging.set_app(app)
    registry.load_models(["fault_models"])
    worker = None
    try:
        server.stop()
        job = Stall(label="broker-down")
        job.save()
        with pytest.raises(BrokerUnavailable):
            job.work_retry()
        assert status(job, "PENDING", attempt=1)
        assert job.current_process_step.startswith("broker unreachable")

        # While the broker is still down, the sweep reports it and leaves it PENDING.
        report = monitor.sweep(now=utcnow() + timedelta(seconds=2))
        [outcome] = report.outcomes
        assert (outcome.reason, outcome.action) == (stuck.BROKER_UNREACHABLE, monitor.Action.STILL_PENDING)
        assert status(job, "PENDING", attempt=1)

        server.start()  # same port
        worker = InProcessWorker(app, "a@faults").start()
        # The first sweep that finds the broker answering sends it, whatever its queue timeout
        # (what `procctl monitor --once` prints; with a 10-minute queue timeout and
        # `procctl monitor` as a process of its own, in test_e2e.py).
        output = "\n".join(monitor.sweep().lines())
        assert f"fault_stall/{job.pk} fault_stall.work_retry PENDING (attempt 1): " in output
        assert "-> sent again" in output
        wait_for(lambda: status(job, "SUCCESS"), timeout=15, message="the process to run")
        assert job.attempt == 1 and len(fm.runs_of(job)) == 1
        assert [h["status"] for h in job.history] == ["PENDING", "DISPATCHED", "RUNNING", "SUCCESS"] \
            or [h["status"] for h in job.history] == ["PENDING", "RUNNING", "SUCCESS"]
        assert any(w.startswith("monitor: ") and "sending it again" in w for w in job.warnings)
        # Another sweep finds nothing left to do.
        assert monitor.sweep(now=utcnow() + timedelta(seconds=2)).outcomes == []
    finally:
        fm.reset()
        if worker is not None:
            worker.stop()
        messaging.set_app(None)
        app.close()
        server.cleanup()


def test_a_message_dropped_after_dispatched_is_detected_and_retried_or_failed(fault_app, workers):
    retried, failed = Stall(label="purged-retry"), Stall(label="purged-fail")
    retried.save()
    failed.save()
    retried.work_retry()
    failed.work_fail()
    assert status(retried, "DISPATCHED") and status(failed, "DISPATCHED")
    dropped = fault_app.control.purge()  # the broker loses the messages (and their monitor checks)
    assert dropped >= 2
    workers("a@faults")
    later = utcnow() + timedelta(seconds=2)  # past queue_timeout (1 s) and the deadline (2 s)
    report = monitor.sweep(now=later)
    by_id = {o.stuck.id: o for o in report.outcomes}
    assert (by_id[retried.pk].reason, by_id[retried.pk].action) == (stuck.NOT_STARTED, monitor.Action.RETRIED)
    assert (by_id[failed.pk].reason, by_id[failed.pk].action) == (stuck.NOT_STARTED, monitor.Action.FAILED)
    wait_for(lambda: status(retried, "SUCCESS", attempt=2), timeout=15, message="the retried attempt")
    assert len(fm.runs_of(retried)) == 1 and fm.runs_of(retried)[0][0] == 2
    assert status(failed, "FAILURE", attempt=1) and fm.runs_of(failed) == []
    assert failed.errors[0].startswith("DISPATCHED for ") and "or the message was lost" in failed.errors[0]
    assert retried.warnings[0].startswith("monitor: DISPATCHED for ")
    # Sweeping again changes nothing.
    assert monitor.sweep(now=later).outcomes == []


def test_duplicate_and_stale_messages_and_monitor_checks_run_nothing_twice(fault_app, workers):
    workers("a@faults")
    kind = registry.kind(Stall, "work_retry")
    job = Stall(label="dupes")
    job.save()
    job.work_retry()
    wait_for(lambda: status(job, "SUCCESS", attempt=1), message="attempt 1")
    old = Stall._get_collection().find_one({"_id": job.pk})
    job.work_retry()  # called again: attempt 2; then every old message comes back
    wait_for(lambda: status(job, "SUCCESS", attempt=2), message="attempt 2")
    raw = Stall._get_collection().find_one({"_id": job.pk})
    for stale in (old, raw, raw):  # a stale message of attempt 1, and attempt 2's twice more
        messaging.publish(kind, stale)
    for stale in (old, raw, raw):  # late and duplicate monitor checks, due now
        checks.schedule_check(kind, stale, utcnow())
    wait_for(lambda: _broker_idle(fault_app), timeout=10, message="every message to be handled")
    assert [attempt for attempt, _ in fm.runs_of(job)] == [1, 2]
    after = Stall._get_collection().find_one({"_id": job.pk})
    assert (after["process_status"], after["attempt"], after["history"]) == ("SUCCESS", 2, raw["history"])


def _broker_idle(app) -> bool:
    """No message waiting in the queue and none delivered but not yet acknowledged."""
    prefix = app.conf.broker_transport_options["global_keyprefix"]
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return (client.llen(prefix + "celery") == 0 and client.llen(prefix + "proc.monitor") == 0
                and client.hlen(prefix + "unacked") == 0)


# -- children and joins ------------------------------------------------------------------------


def children_of(parent) -> list:
    return list(FaultChild.objects(group=str(parent.pk)))


def test_a_child_that_never_finishes_fails_its_parent_by_the_parents_policy(fault_app, workers, caplog):
    workers("a@faults")
    parent = FaultParent(n=1, child_method="run_alert")  # the child's policy: alert; the parent's: fail
    parent.save()
    release = gate_group(parent)
    parent.fan_out()
    wait_for(lambda: status(parent, "FAILURE"), timeout=15, message="the parent's check to resolve it")
    [child] = children_of(parent)
    [error] = parent.errors
    assert error.startswith("1 child process(es) still running ") and error.endswith("past the deadline")
    assert parent.history[-1]["by"] == "monitor" and parent.history[-1]["note"] == f"monitor: {stuck.CHILDREN_OVERRAN}"
    # The child keeps its heartbeat: its own check (policy alert) says so and leaves it alone.
    wait_for(lambda: child.reload_status().warnings, timeout=10, message="the child's alert")
    [warning] = child.warnings
    assert warning.startswith(f"monitor (attempt 1): {stuck.OVERRAN}: running past its expected duration")
    assert warning.endswith("left alone (recovery policy: alert)")
    assert child.process_status == "RUNNING"
    release.set()
    wait_for(lambda: status(child, "SUCCESS"), timeout=10, message="the child to finish")
    assert parent.reload_status().process_status == "FAILURE" and fm.joins[str(parent.pk)] == 0
    assert fm.runs_of(parent) == [(1, "a@faults")] and len(fm.runs_of(child)) == 1
    # Reported once, though checked again and again; the method's own warning (its attempt is
    # still the current one) is kept.
    assert child.warnings == [warning, "late warning"]


def test_a_child_whose_worker_dies_fails_and_the_parent_joins_once(fault_app, workers):
    a = workers("a@faults")
    parent = FaultParent(n=1, child_method="run_fail")
    parent.save()
    gate_group(parent)
    parent.fan_out_patient()  # expected 6 s: the child's own check (2 s) acts first
    wait_for(lambda: status(parent, "WAITING_FOR_RESULT"), message="the parent to wait")
    [child] = children_of(parent)
    wait_for(lambda: status(child, "RUNNING"), message="the child to run")
    a.kill()
    workers("b@faults")
    wait_for(lambda: status(parent, "FAILURE"), timeout=15, message="the join to run after the child failed")
    assert status(child, "FAILURE", attempt=1)
    assert child.errors[0].startswith("worker heartbeat lost after ")
    assert fm.joins[str(parent.pk)] == 1
    [error] = parent.errors
    assert error.startswith(f"1 of 1 child processes failed: FaultChild {child.pk}: worker heartbeat lost")
    assert [e[0] for e in events(parent)] == ["PENDING", "RUNNING", "WAITING_FOR_RESULT", "RUNNING", "FAILURE"]
    assert fm.runs_of(parent) == [(1, "a@faults")] and fm.runs_of(child) == [(1, "a@faults")]


def gate_group(parent) -> threading.Event:
    key = f"group:{parent.pk}"
    event = fm.gates[key] = threading.Event()
    fm.blocking[key] = {1}
    return event


def test_lost_join_is_run_once_by_the_monitor(fault_app, workers, monkeypatch):
    workers("a@faults")
    lost = []
    monkeypatch.setattr(execution, "notify_parent", lambda parent: lost.append(parent))  # the crash
    parent = FaultParent(n=2, child_method="run_fail")
    parent.save()
    release = gate_group(parent)  # the children finish only once the parent waits for them
    parent.fan_out()
    wait_for(lambda: status(parent, "WAITING_FOR_RESULT"), message="the parent to wait")
    release.set()
    wait_for(lambda: FaultChild.objects(group=str(parent.pk), process_status="SUCCESS").count() == 2,
             timeout=10, message="both children")
    # A child calls notify_parent after its SUCCESS write lands: wait for both calls, or the
    # undo below could let the second one run the real join.
    wait_for(lambda: len(lost) == 2, timeout=10, message="both children's notify_parent")
    assert status(parent, "WAITING_FOR_RESULT")
    monkeypatch.undo()
    # The parent's own check (at its deadline) and four concurrent sweeps race to run the join.
    later = utcnow() + timedelta(seconds=3)
    threads = [threading.Thread(target=monitor.sweep, kwargs={"now": later}) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_for(lambda: status(parent, "SUCCESS"), timeout=10, message="the join to finish")
    assert fm.joins[str(parent.pk)] == 1
    assert fm.runs_of(parent) == [(1, "a@faults")]
    assert [e[0] for e in events(parent)] == ["PENDING", "RUNNING", "WAITING_FOR_RESULT", "RUNNING", "SUCCESS"]
    assert any(w == f"monitor: {stuck.JOIN_LOST}; running it now" for w in parent.warnings)
    for child in FaultChild.objects(group=str(parent.pk)):
        assert child.process_status == "SUCCESS" and len(fm.runs_of(child)) == 1
    assert monitor.sweep(now=later).outcomes == []
    assert fm.joins[str(parent.pk)] == 1


# -- overrunning with a fresh heartbeat ---------------------------------------------------------


def test_a_process_that_overruns_but_keeps_its_heartbeat_is_left_alone_or_failed_by_policy(
        fault_app, workers, caplog):
    workers("a@faults")
    alert, fail, retry = Stall(label="alert"), Stall(label="fail"), Stall(label="retry")
    for job, method in ((alert, "work_alert"), (fail, "work_fail"), (retry, "work_retry")):
        job.save()
        gate(job)
        getattr(job, method)()
    wait_for(lambda: status(fail, "FAILURE") and status(retry, "FAILURE"), timeout=15,
             message="the fail and retry policies to end the overrunning processes")
    wait_for(lambda: alert.reload_status().warnings, timeout=10, message="the alert")
    assert alert.process_status == "RUNNING" and alert.heartbeat is not None
    [warning] = alert.warnings
    assert warning.startswith(f"monitor (attempt 1): {stuck.OVERRAN}: running past its expected duration")
    assert "heartbeat fresh" in warning and warning.endswith("left alone (recovery policy: alert)")
    [error] = fail.errors
    assert error.startswith("running past its expected duration") and "on host a@faults, heartbeat fresh" in error
    [error] = retry.errors
    assert error.endswith("not retried: it is still running, a new attempt would run it twice")
    assert retry.attempt == 1 and fail.attempt == 1
    for job in (fail, retry):
        assert job.history[-1]["by"] == "monitor" and job.history[-1]["note"] == f"monitor: {stuck.OVERRAN}"
        assert_late_writes_changed_nothing(job, caplog)
        caplog.clear()
    fm.gates[str(alert.pk)].set()
    wait_for(lambda: status(alert, "SUCCESS"), timeout=10, message="the alerted process to finish")
    assert alert.warnings == [warning, "late warning"]  # its own attempt: its writes count
    for job in (alert, fail, retry):
        assert fm.runs_of(job) == [(1, "a@faults")]
