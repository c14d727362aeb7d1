"""Heartbeats: refreshed every interval while a method runs, at most one write per interval
(steps ride on it), stopped for good with the worker, and harmless once superseded."""
from __future__ import annotations

import threading
import time

import pytest

from fault_models import Stall
from proc import machine
from proc.run import heartbeat
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import wait_for

INTERVAL = 0.2  # conftest's PROC_HEARTBEAT_INTERVAL (checked below)


def running(label="beat") -> tuple:
    """A Stall document RUNNING at attempt 1 (written through the state machine)."""
    doc = Stall(label=label)
    doc.save()
    coll = Stall._get_collection()
    machine.transition(machine.Attempt(coll.name, doc.pk, 0), "request", machine.Change(fields={"current_process": "work_alert"}))
    machine.transition(machine.Attempt(coll.name, doc.pk, 1), "claim", machine.Change(fields={"heartbeat": utcnow()}))
    doc.reload_status()
    return doc, coll


@pytest.fixture
def writes(monkeypatch):
    """Every heartbeat write (time, fields) that reached the database."""
    seen: list = []
    real = machine.update_fields

    def counting(attempt, **kwargs):
        if "heartbeat" in (kwargs.get("fields") or {}):
            seen.append((time.monotonic(), dict(kwargs["fields"])))
        return real(attempt, **kwargs)

    monkeypatch.setattr(machine, "update_fields", counting)
    return seen


def test_a_running_process_heartbeats_every_interval(writes):
    from proc import config

    assert config.get().heartbeat_interval == INTERVAL
    doc, coll = running()
    first = doc.heartbeat
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    try:
        wait_for(lambda: len(writes) >= 3, timeout=5, message="three heartbeats")
    finally:
        heartbeat.stop(beat)
    doc.reload_status()
    assert doc.heartbeat > first
    gaps = [b[0] - a[0] for a, b in zip(writes, writes[1:])]
    assert all(gap >= INTERVAL * 0.9 for gap in gaps), gaps


def test_steps_ride_on_the_heartbeat_at_most_one_write_per_interval(writes):
    doc, coll = running()
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    heartbeat._local.beat = beat  # the thread that runs the method
    started = time.monotonic()
    try:
        n = 0
        while time.monotonic() - started < 1.0:  # a method that reports progress constantly
            n += 1
            doc.set_step(f"step {n}")
            time.sleep(0.002)  # the work between two progress reports
        elapsed = time.monotonic() - started
        wait_for(lambda: doc.reload_status().current_process_step == f"step {n}", timeout=2,
                 message="the last step to be written with the next beat")
    finally:
        heartbeat.stop(beat)
    assert n > 100
    during = [w for w in writes if w[0] <= started + elapsed]
    assert len(during) <= elapsed / INTERVAL + 1, (len(during), elapsed)
    assert any("current_process_step" in fields for _, fields in writes)


def test_outside_a_worker_a_step_is_written_at_once(writes):
    doc, _ = running()
    doc.set_step("from a shell")
    assert doc.reload_status().current_process_step == "from a shell"
    assert writes == []


def test_stopping_a_worker_stops_its_beats_and_only_its_beats(writes):
    doc1, coll = running("one")
    doc2, _ = running("two")
    dead = heartbeat.start(machine.Attempt(coll.name, doc1.pk, doc1.attempt), "dead@test")
    alive = heartbeat.start(machine.Attempt(coll.name, doc2.pk, doc2.attempt), "alive@test")
    try:
        assert heartbeat.stop_worker("dead@test") == 1
        stopped_at = time.monotonic()
        frozen = doc1.reload_status().heartbeat
        wait_for(lambda: sum(1 for t, _ in writes if t > stopped_at) >= 3, timeout=5,
                 message="the live worker's beats")
        dead.touch("written by a dead worker")  # its method is still blocked inside; nothing
        dead.write()
        assert doc1.reload_status().heartbeat == frozen
        assert doc1.current_process_step is None
        assert doc2.reload_status().heartbeat > frozen
        assert [b.host for b in heartbeat.active()] == ["alive@test"]
    finally:
        heartbeat.stop(alive)


def test_a_beat_started_after_its_worker_was_stopped_is_born_stopped(writes):
    """A worker killed between an attempt's claim and the start of its beat: the late beat
    must not keep the dead attempt fresh (the monitor would see a live worker for ever)."""
    doc, coll = running("late")
    heartbeat.stop_worker("killed@test")
    late = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "killed@test")
    frozen = doc.reload_status().heartbeat
    try:
        assert late.stopped and heartbeat.active() == []
        late.touch("written by a dead worker")
        late.write()
        assert doc.reload_status().heartbeat == frozen and doc.current_process_step is None
        heartbeat.worker_started("killed@test")  # a new worker of that name: its beats are kept
        again = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "killed@test")
        assert not again.stopped and heartbeat.active() == [again]
        heartbeat.stop(again)
    finally:
        heartbeat.stop_all()


def test_a_superseded_attempts_heartbeat_changes_nothing(writes):
    doc, coll = running()
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    try:
        # The monitor sends it again: attempt 2.
        machine.transition(machine.Attempt(coll.name, doc.pk, 1), "redispatch", machine.Change(sources=[S.RUNNING], note="test"))
        wait_for(lambda: beat.superseded, timeout=5, message="the beat to notice")
        after = coll.find_one({"_id": doc.pk})
        beat.write("late step")
        assert coll.find_one({"_id": doc.pk}) == after
        assert after["attempt"] == 2 and after["process_status"] == "PENDING"
    finally:
        heartbeat.stop(beat)


def test_a_method_running_on_a_real_worker_keeps_its_heartbeat_until_it_returns(worker):
    from core_models import Job, gates

    job = Job()
    job.save()
    gates[str(job.pk)] = threading.Event()
    try:
        job.wait_for_gate()
        wait_for(lambda: job.reload_status().process_status == "RUNNING", message="the claim")
        seen = {job.heartbeat}
        wait_for(lambda: seen.add(job.reload_status().heartbeat) or len(seen) >= 3, timeout=5,
                 message="the heartbeat to advance twice while the method blocks")
        assert job.process_status == "RUNNING"
    finally:
        gates[str(job.pk)].set()
    job.block_until_complete(10)
    assert job.process_status == "SUCCESS"
    assert not [b for b in heartbeat.active() if b.id == job.pk]

