"""The state machine: allowed transitions as data, atomic conditional writes, history."""
from __future__ import annotations

import threading

import pytest

from core_models import Job
from proc import IllegalTransition, ProcessStatus as S, config, machine
from proc.store import db
from proc.status import ALLOWED, LIFECYCLE, NOT_PROCESSING, PROCESSING


def test_statuses_are_stored_as_their_names_in_lifecycle_order():
    assert [s.value for s in LIFECYCLE] == [
        "READY", "PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT", "SUCCESS", "FAILURE"]
    assert S.DISPATCHED == "DISPATCHED" and str(S.RUNNING) == "RUNNING"
    assert PROCESSING == {S.PENDING, S.DISPATCHED, S.RUNNING, S.WAITING_FOR_RESULT}
    assert NOT_PROCESSING == {S.READY, S.SUCCESS, S.FAILURE}


def test_unknown_status_value_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown process status 'DONE'.*READY, PENDING, DISPATCHED"):
        S.parse("DONE")


def test_allowed_transitions_are_exactly_the_declared_ones():
    allowed = {(a.value, b.value) for a, b in ALLOWED}
    assert ("READY", "PENDING") in allowed
    assert ("PENDING", "DISPATCHED") in allowed
    assert ("PENDING", "RUNNING") in allowed  # a worker may overtake the DISPATCHED write
    assert ("WAITING_FOR_RESULT", "RUNNING") in allowed  # the join
    for active in ("PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT"):
        assert (active, "FAILURE") in allowed
        assert (active, "READY") in allowed  # reset
        assert (active, "PENDING") in allowed or active == "PENDING"  # redispatch
    for never in [("SUCCESS", "RUNNING"), ("RUNNING", "DISPATCHED"), ("WAITING_FOR_RESULT", "SUCCESS"),
                  ("READY", "RUNNING"), ("SUCCESS", "FAILURE"), ("READY", "SUCCESS")]:
        assert never not in allowed, never


def _saved_job(**kw) -> Job:
    job = Job(**kw)
    job.save()
    return job


def test_a_transition_is_one_conditional_write_that_appends_history():
    job = _saved_job()
    coll = Job._get_collection()
    after = machine.transition(machine.Attempt(coll.name, job.pk, 0), "request", machine.Change(note="called", host="h1", fields={"current_process": "noop"}), fetch=True)
    assert after == coll.find_one({"_id": job.pk})  # the derived post-image is what was stored
    assert after["process_status"] == "PENDING"
    assert after["attempt"] == 1
    assert after["current_process"] == "noop"
    [entry] = after["history"]
    assert entry["status"] == "PENDING" and entry["attempt"] == 1 and entry["host"] == "h1"
    assert entry["note"] == "called" and entry["event"] == "request"
    assert after["last_status_change"] == entry["time"]
    lean = machine.transition(machine.Attempt(coll.name, job.pk, 1), "dispatched", machine.Change(fields={"deadline": None}))
    assert lean["process_status"] == "DISPATCHED" and lean["attempt"] == 1 and "history" not in lean
    assert coll.find_one({"_id": job.pk})["history"][-1]["status"] == "DISPATCHED"


def test_a_write_for_another_status_or_attempt_changes_nothing():
    job = _saved_job()
    coll = Job._get_collection()
    before = coll.find_one({"_id": job.pk})
    assert machine.transition(machine.Attempt(coll.name, job.pk, 0), "claim") is None  # READY, not PENDING
    machine.transition(machine.Attempt(coll.name, job.pk, 0), "request")
    assert machine.transition(machine.Attempt(coll.name, job.pk, 7), "dispatched") is None  # stale attempt
    after = coll.find_one({"_id": job.pk})
    assert after["process_status"] == "PENDING" and len(after["history"]) == 1
    assert before["process_status"] == "READY"


def test_an_illegal_transition_raises_before_writing():
    job = _saved_job()
    coll = Job._get_collection()
    with pytest.raises(IllegalTransition, match="SUCCESS -> RUNNING is not allowed"):
        machine.transition(machine.Attempt(coll.name, job.pk, 0), "claim", machine.Change(sources=[S.SUCCESS]))
    with pytest.raises(IllegalTransition, match="unknown event"):
        machine.transition(machine.Attempt(coll.name, job.pk, 0), "teleport")
    assert coll.find_one({"_id": job.pk})["history"] == []


@pytest.fixture
def eager_thread_switching():
    """Switch threads as often as possible, so unserialised find-then-update races show."""
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_many_threads_racing_one_transition_exactly_one_wins(eager_thread_switching):
    # Without the embedded client's write lock mongomock lets several threads win about 4 rounds in 10.
    coll = Job._get_collection()
    for round_ in range(60):
        job = _saved_job(label=f"race-{round_}")
        machine.transition(machine.Attempt(coll.name, job.pk, 0), "request")
        start = threading.Barrier(8)
        winners = []

        def claim():
            start.wait()
            if machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", machine.Change(host="racer")) is not None:
                winners.append(1)

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        doc = coll.find_one({"_id": job.pk})
        assert [h["status"] for h in doc["history"]] == ["PENDING", "RUNNING"]


def test_history_keeps_the_newest_entries_only():
    config.configure(history_limit=3)
    job = _saved_job()
    coll = Job._get_collection()
    attempt = 0
    for _ in range(3):
        machine.transition(machine.Attempt(coll.name, job.pk, attempt), "request")
        attempt += 1
        machine.transition(machine.Attempt(coll.name, job.pk, attempt), "fail", machine.Change(errors=["x"]))
    doc = coll.find_one({"_id": job.pk})
    assert [(h["status"], h["attempt"]) for h in doc["history"]] == [
        ("FAILURE", 2), ("PENDING", 3), ("FAILURE", 3)]


def test_errors_are_capped_newest_kept():
    config.configure(messages_limit=2)
    job = _saved_job()
    coll = Job._get_collection()
    machine.transition(machine.Attempt(coll.name, job.pk, 0), "request")
    after = machine.transition(machine.Attempt(coll.name, job.pk, 1), "fail", machine.Change(errors=["a", "b", "c"]), fetch=True)
    assert after["errors"] == ["b", "c"] == coll.find_one({"_id": job.pk})["errors"]


def test_new_documents_take_any_status_saved_ones_change_only_through_the_machine():
    imported = Job(process_status="SUCCESS")
    imported.save()
    assert Job.objects.get(pk=imported.pk).process_status == "SUCCESS"
    imported.process_status = "READY"
    with pytest.raises(IllegalTransition, match="only through the state machine"):
        imported.save()
    imported.reload()
    imported.label = "other fields save as usual"
    imported.save()
    assert Job.objects.get(pk=imported.pk).label == "other fields save as usual"


def test_invalid_status_on_a_new_document_is_refused():
    from mongoengine import ValidationError

    with pytest.raises(ValidationError):
        Job(process_status="COMPLETED").save()


def test_listeners_see_each_transition_and_cannot_break_it():
    seen = []
    machine.listeners.append(lambda t: seen.append((t.source, t.target, t.event)))
    machine.listeners.append(lambda t: 1 / 0)
    job = _saved_job()
    coll = Job._get_collection()
    machine.transition(machine.Attempt(coll.name, job.pk, 0), "request")
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "dispatched")
    assert seen == [(None, S.PENDING, "request"),  # no earlier history entry to name a source
                    (S.PENDING, S.DISPATCHED, "dispatched")]


def test_connect_is_idempotent_per_uri(database_uri):
    first = db.connect(database_uri)
    assert db.connect(database_uri) is first
