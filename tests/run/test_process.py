"""Processes on a real Redis broker and a real in-process Celery worker."""
from __future__ import annotations

import threading

import pytest
from bson import json_util

import core_models
from core_models import Child, Job, Limited, Parent
from proc import ProcessAlreadyRunning, machine
from proc.run import limits
from proc.names import RUN_TASK as TASK_NAME
from support import hold_dispatched_until_claimed, wait_for


@pytest.fixture(autouse=True)
def _counters():
    core_models.reset_counters()
    yield
    for gate in core_models.gates.values():
        gate.set()


def statuses(doc) -> list[str]:
    doc.reload()
    return [h["status"] for h in doc.history]


@pytest.fixture
def claim_after_dispatched(monkeypatch):
    """Hold every RUNNING claim until the DISPATCHED write of that attempt has landed, so
    a test sees every transition (otherwise a fast worker may overtake that write)."""
    original = machine.transition
    dispatched: dict = {}

    def ordered(attempt, event, *args, **kw):
        key = (attempt.collection, str(attempt.id), attempt.number)
        if event == "claim":
            dispatched.setdefault(key, threading.Event()).wait(timeout=20)
        result = original(attempt, event, *args, **kw)
        if event == "dispatched":
            dispatched.setdefault(key, threading.Event()).set()
        return result

    monkeypatch.setattr(machine, "transition", ordered)


def test_full_lifecycle_records_every_transition_time_and_history(worker, claim_after_dispatched):
    job = Job(label="lifecycle")
    job.save()
    created = job.create_time
    assert job.process_status == "READY" and job.attempt == 0

    job.add(2, times=3)
    assert job.process_status in ("DISPATCHED", "RUNNING", "SUCCESS")
    assert job.current_process == "add" and job.attempt == 1 and job.celery_task_id

    job.block_until_complete(timeout=20)
    job.reload()
    assert job.process_status == "SUCCESS"
    assert job.value == 6  # the method ran, with its args and kwargs
    assert core_models.runs[str(job.pk)] == 1
    assert [(h["status"], h["event"], h["attempt"]) for h in job.history] == [
        ("PENDING", "request", 1), ("DISPATCHED", "dispatched", 1),
        ("RUNNING", "claim", 1), ("SUCCESS", "succeed", 1)]
    times = [h["time"] for h in job.history]
    assert times == sorted(times) and times[0] >= created
    assert job.last_status_change == times[-1] == job.complete_time
    assert job.worker_hostname and job.history[2]["host"] == job.worker_hostname
    assert job.heartbeat is not None and job.errors == []
    assert job.current_process_step == "adding 2 x 3"
    assert job.deadline is not None and job.deadline > times[1]


def test_calling_again_after_the_end_starts_a_new_attempt(worker, claim_after_dispatched):
    job = Job()
    job.save()
    job.noop()
    job.block_until_complete(20)
    first_task = job.celery_task_id
    job.noop()
    job.block_until_complete(20)
    assert job.attempt == 2 and job.celery_task_id != first_task
    assert core_models.runs[str(job.pk)] == 2
    assert statuses(job)[-4:] == ["PENDING", "DISPATCHED", "RUNNING", "SUCCESS"]


def test_an_exception_in_the_method_ends_failure_with_the_error_recorded(worker):
    job = Job()
    job.save()
    job.explode()
    job.block_until_complete(20)
    assert job.process_status == "FAILURE"
    assert job.errors == ["ValueError: the input is broken"]
    assert job.complete_time is not None
    other = Job()
    other.save()
    other.noop()  # one failure never breaks the next process
    assert other.block_until_complete(20).process_status == "SUCCESS"


def test_process_failure_records_each_message(worker):
    job = Job()
    job.save()
    job.refuse()
    job.block_until_complete(20)
    assert job.process_status == "FAILURE"
    assert job.errors == ["first reason", "second reason"]


def test_calling_a_processing_document_raises_process_already_running(worker):
    job = Job()
    job.save()
    core_models.gates[str(job.pk)] = threading.Event()
    job.wait_for_gate()
    stale_copy = Job.objects.get(pk=job.pk)
    with pytest.raises(ProcessAlreadyRunning, match="wait for it, or reset/cancel it first"):
        job.noop()
    with pytest.raises(ProcessAlreadyRunning):
        stale_copy.noop()
    core_models.gates[str(job.pk)].set()
    job.block_until_complete(20)
    assert job.process_status == "SUCCESS" and job.current_process == "wait_for_gate"
    assert core_models.runs[str(job.pk)] == 1


def test_a_stale_copy_of_a_finished_document_starts_on_the_fresh_attempt(worker):
    job = Job()
    job.save()
    stale = Job.objects.get(pk=job.pk)
    job.noop()
    job.block_until_complete(20)
    stale.noop()  # its attempt (0) is old: the call retries on the stored attempt
    stale.block_until_complete(20)
    assert stale.attempt == 2 and core_models.runs[str(job.pk)] == 2


def test_arguments_must_be_json(worker):
    job = Job()
    job.save()
    with pytest.raises(TypeError, match="must be JSON-able"):
        job.add(object())
    job.reload()
    assert job.process_status == "READY" and job.history == []


def test_an_unsaved_document_cannot_start_a_process(app):
    with pytest.raises(Exception, match="save the Job before calling a process"):
        Job().noop()


def _message(job) -> list:
    pargs = job.process_args
    return [job.collection_name(), json_util.dumps(job.pk), job.current_process,
            pargs["args"], pargs["kwargs"], job.attempt]


def test_duplicate_and_stale_attempt_messages_run_nothing_twice(app, worker):
    job = Job()
    job.save()
    job.noop()
    job.block_until_complete(20)
    job.noop()  # attempt 2
    job.block_until_complete(20)
    assert core_models.runs[str(job.pk)] == 2
    seen = []
    machine.listeners.append(lambda t: seen.append(t))
    duplicate = _message(job)                      # same attempt, delivered again
    stale = _message(job)
    stale[-1] = 1                                  # a message of the old attempt
    for args in (duplicate, duplicate, stale):
        app.send_task(TASK_NAME, args=args)
    # A marker process sent after them runs once the worker has consumed the earlier ones.
    marker = Job()
    marker.save()
    marker.noop()
    marker.block_until_complete(20)
    wait_for(lambda: core_models.runs[str(marker.pk)] == 1)
    assert core_models.runs[str(job.pk)] == 2
    job.reload()
    assert job.process_status == "SUCCESS" and job.attempt == 2
    assert [t for t in seen if str(t.id) == str(job.pk)] == []


def test_a_worker_that_overtakes_the_dispatched_write_never_steps_back(app, worker, monkeypatch):
    """The worker may claim RUNNING before the caller's DISPATCHED write lands."""
    from proc.run import dispatch

    hold_dispatched_until_claimed(monkeypatch)
    job = Job()
    job.save()
    dispatch.start(job, "noop")
    job.block_until_complete(20)
    assert [h["status"] for h in job.history] == ["PENDING", "RUNNING", "SUCCESS"]
    assert job.process_status == "SUCCESS"


def test_join_runs_exactly_once_when_children_finish_together(worker, claim_after_dispatched):
    for n in (2, 5):
        parent = Parent(n=n)
        parent.save()
        core_models.barrier[str(parent.pk)] = threading.Barrier(n)
        parent.fan_out()
        parent.block_until_complete(30)
        assert parent.process_status == "SUCCESS", parent.describe()
        assert core_models.joins[str(parent.pk)] == 1
        assert parent.joined_with == n
        assert [h["status"] for h in parent.history] == [
            "PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT", "RUNNING", "SUCCESS"]
        kids = Child.objects(group=str(parent.pk))
        assert len(kids) == n and all(k.process_status == "SUCCESS" for k in kids)
        assert all(core_models.runs[str(k.pk)] == 1 for k in kids)


def test_a_failed_child_fails_the_parent_after_its_join(worker):
    parent = Parent(n=3, failing=1)
    parent.save()
    parent.fan_out()
    parent.block_until_complete(30)
    assert parent.process_status == "FAILURE"
    assert core_models.joins[str(parent.pk)] == 1  # the join ran, then the rule applied
    assert len(parent.errors) == 1
    assert parent.errors[0].startswith("1 of 3 child processes failed: Child ")
    assert "failed on purpose" in parent.errors[0]


def test_a_tolerant_parent_succeeds_with_a_warning_per_failed_child(worker):
    parent = Parent(n=3, failing=2)
    parent.save()
    parent.fan_out_tolerant()
    parent.block_until_complete(30)
    assert parent.process_status == "SUCCESS"
    assert parent.warnings and parent.warnings[0].startswith("2 of 3 child processes failed")
    assert parent.joined_with == 1


def test_a_waiting_parent_frees_its_slot_so_children_of_the_same_limit_can_run(worker):
    """Concurrency limit: 20 concurrent callers, limit 4: never more than 4 in use, all finish."""
    core_models.gates["limited"] = threading.Event()
    docs = [Limited() for _ in range(20)]
    for d in docs:
        d.save()
    peak = {"slots": 0}
    kind = "test_limited.work"

    def watch(t):
        if t.collection == "test_limited":
            peak["slots"] = max(peak["slots"], len(limits.holders(kind)))

    machine.listeners.append(watch)
    start = threading.Barrier(20)
    errors = []

    def call(doc):
        try:
            start.wait()
            doc.work()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(d,)) for d in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    wait_for(lambda: core_models.active["now"] == 4, message="4 processes running")
    held = [d for d in Limited.objects if d.process_status == "PENDING"]
    assert len(held) == 16
    assert all(d.current_process_step.startswith("waiting for a slot: 4/4 in use") for d in held
               if d.current_process_step)
    assert Limited.objects(process_status__in=["DISPATCHED", "RUNNING"]).count() == 4
    core_models.gates["limited"].set()
    for d in docs:
        d.block_until_complete(30)
        assert d.process_status == "SUCCESS"
    assert core_models.active["max"] == 4
    assert peak["slots"] <= 4
    assert sum(core_models.runs[str(d.pk)] for d in docs) == 20
    assert limits.holders(kind) == []


def test_held_processes_are_sent_oldest_first_as_slots_free(worker):
    docs = [Limited() for _ in range(7)]
    for d in docs:
        d.save()
        core_models.gates[str(d.pk)] = threading.Event()
        d.work()
    running = lambda: {str(d.pk) for d in Limited.objects(process_status="RUNNING")}
    wait_for(lambda: running() == {str(d.pk) for d in docs[:4]}, message="the 4 oldest running")
    for finished, next_up in zip(docs[:3], docs[4:]):
        core_models.gates[str(finished.pk)].set()
        wait_for(lambda: str(next_up.pk) in running(), message=f"{next_up.pk} started")
        assert len(running()) == 4
        later = [str(d.pk) for d in docs[docs.index(next_up) + 1:]]
        assert not running() & set(later)
    for d in docs:
        core_models.gates[str(d.pk)].set()
    for d in docs:
        assert d.block_until_complete(30).process_status == "SUCCESS"


@pytest.fixture
def private_app(redis_url):
    """A Celery app with keys of its own: no other in-process worker takes its messages."""
    from support import make_test_app
    from proc.run import messaging

    app = make_test_app(redis_url)
    messaging.set_app(app)
    yield app
    messaging.set_app(None)
    app.close()


def test_a_stopping_worker_finishes_what_it_runs(private_app):
    """Warm shutdown: the worker is asked to stop while a process runs; the process still
    ends SUCCESS, and the worker stops only after that."""
    from proc.run.inprocess import in_process_worker

    app = private_app
    job = Job()
    job.save()
    core_models.gates[str(job.pk)] = threading.Event()
    context = in_process_worker(app, concurrency=2)
    w = context.__enter__()
    job.wait_for_gate()
    wait_for(lambda: Job.objects.get(pk=job.pk).process_status == "RUNNING", message="running")
    problems = []

    def stop_worker():
        try:
            context.__exit__(None, None, None)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            problems.append(exc)

    stopper = threading.Thread(target=stop_worker)
    stopper.start()
    wait_for(lambda: not w.running, message="the worker to begin its shutdown")
    stopper.join(timeout=0.5)  # the shutdown waits for the running process...
    assert problems == []
    assert stopper.is_alive() and Job.objects.get(pk=job.pk).process_status == "RUNNING"
    core_models.gates[str(job.pk)].set()  # ...which then finishes
    stopper.join(30)
    assert not stopper.is_alive()
    assert Job.objects.get(pk=job.pk).process_status == "SUCCESS"
    assert core_models.runs[str(job.pk)] == 1


def test_a_parent_names_at_most_five_failed_children(worker):
    parent = Parent(n=7, failing=7)
    parent.save()
    parent.fan_out()
    parent.block_until_complete(30)
    [error] = parent.errors
    assert error.startswith("7 of 7 child processes failed: Child ")
    assert error.count("failed on purpose") == 5 and error.endswith("(and 2 more)")
