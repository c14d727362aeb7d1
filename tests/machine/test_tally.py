"""proc.machine.tally: every ending write that lands is counted into the time buckets, whoever
sends it, without a round trip of its own; the counts reach the database with a flush."""
from __future__ import annotations

from proc import machine
from proc.machine import Attempt, Change, many, tally
from proc.monitor import timings
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import CommandCounter
from timing_models import Napper

KIND = "test_napper.nap"


def running(n: int = 1) -> list[Attempt]:
    now = utcnow()
    ids = Napper._get_collection().insert_many([
        {"process_status": "RUNNING", "current_process": "nap", "attempt": 1, "last_status_change": now,
         "history": [{"status": "PENDING", "event": "request", "time": now, "attempt": 1},
                     {"status": "RUNNING", "event": "claim", "time": now, "attempt": 1}]}
        for _ in range(n)]).inserted_ids
    return [Attempt("test_napper", i, 1) for i in ids]


def ended() -> dict:
    return timings.report(3600, (Napper, "nap"))[1][KIND]


def test_an_ending_write_sends_nothing_more_and_is_counted_at_the_flush(database, monkeypatch):
    (attempt,) = running()
    counter = CommandCounter(monkeypatch)
    assert machine.transition(attempt, "fail", Change(errors=["x"], note="by hand")) is not None
    # the read and the write it always sent (mongomock's find_one calls find), nothing for the tally
    assert {c for c in counter.calls if c[0] != "find"} == {("find_one", "test_napper"), ("update_one", "test_napper")}
    assert all(name == "test_napper" for _, name in counter.calls)
    monkeypatch.undo()
    assert tally.collection().count_documents({}) == 0  # nothing written yet
    assert tally.flush() == 3  # its minute, its hour, its kind's all-time document
    assert ended() == {"ended": 1, "failures": 1}
    assert timings.totals((Napper, "nap"))[KIND]["e"] == {"FAILURE": 1}


def test_a_write_that_lands_nowhere_is_not_counted(database):
    (attempt,) = running()
    assert machine.transition(attempt, "fail") is not None
    assert machine.transition(attempt, "fail", Change(sources=[S.RUNNING])) is None  # already ended
    assert ended() == {"ended": 1, "failures": 1}


def test_many_documents_ended_at_once_are_each_counted_from_the_read_of_which_landed(database):
    attempts = running(4)
    assert many.transition_many("test_napper", [a.id for a in attempts[:3]], 1, "fail",
                                Change(errors=["cancelled"], sources=[S.RUNNING])) == 3
    assert many.transition_each("test_napper", [(attempts[3], Change(sources=[S.RUNNING]))], "fail")
    got = ended()
    assert got == {"ended": 4, "failures": 4}
    assert timings.summary(3600, (Napper, "nap"))[KIND]["run"]["n"] == 4


def test_the_all_time_counts_never_fall_and_buckets_of_a_killed_process_are_lost_only_unflushed(database):
    (a, b) = running(2)
    machine.transition(a, "fail")
    tally.flush()
    machine.transition(b, "fail")
    tally.discard()  # as a process killed before its next flush
    assert timings.totals((Napper, "nap"))[KIND]["e"] == {"FAILURE": 1}
