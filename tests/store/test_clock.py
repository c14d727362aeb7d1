"""One clock: every time proc writes or compares is on the database server's clock. Each process
measures its offset from the server (``hello``'s ``localTime``, corrected by half the round
trip) and ``utcnow()`` applies it; the embedded database has offset 0."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from proc import timeutil
from proc.monitor import stuck
from proc.store import db
from proc.timeutil import offset_from, utcnow


@pytest.fixture(autouse=True)
def clock_restored():
    saved = timeutil.clock()
    yield
    timeutil.set_clock_offset(saved["offset"], saved["rtt"], saved["measured"])


def test_the_offset_is_taken_at_the_middle_of_the_round_trip():
    sent = datetime(2026, 1, 1, 12, 0, 0)
    received = sent + timedelta(milliseconds=200)
    assert offset_from(sent, sent + timedelta(minutes=5, milliseconds=100), received) == 300.0
    assert offset_from(sent, sent - timedelta(minutes=5) + timedelta(milliseconds=100), received) == -300.0
    assert offset_from(sent, sent, sent) == 0.0


def test_utcnow_is_the_local_clock_plus_the_offset_in_milliseconds():
    timeutil.set_clock_offset(-300.25)
    local = timeutil.local_utcnow()
    now = utcnow()
    assert abs((local - now).total_seconds() - 300.25) < 0.5
    assert now.microsecond % 1000 == 0


def test_the_embedded_database_measures_nothing_and_keeps_offset_zero():
    if not db.is_embedded():
        pytest.skip("embedded tier only")
    assert db.measure_clock() is None
    assert timeutil.clock_offset() == 0.0


@pytest.mark.real_server
@pytest.mark.parametrize("shift", [-300.0, 300.0])
def test_a_host_clock_five_minutes_off_is_corrected_to_the_servers(monkeypatch, shift):
    real = timeutil.local_utcnow
    monkeypatch.setattr(timeutil, "local_utcnow", lambda: real() + timedelta(seconds=shift))
    offset = db.measure_clock()
    assert offset is not None and abs(offset + shift) < 1.0, offset
    assert abs((utcnow() - real()).total_seconds()) < 1.0
    assert timeutil.clock()["rtt"] is not None and timeutil.clock()["rtt"] < 1.0


@pytest.mark.real_server
def test_a_server_that_does_not_answer_keeps_the_last_offset(monkeypatch):
    admin = db.database().client.admin  # the first use measured the offset
    timeutil.set_clock_offset(12.5)

    def refuse(*_args, **_kwargs):
        from pymongo.errors import AutoReconnect
        raise AutoReconnect("cut off")

    monkeypatch.setattr(type(admin), "command", refuse)
    assert db.measure_clock() is None
    assert timeutil.clock_offset() == 12.5


@pytest.mark.real_server
@pytest.mark.parametrize("shift", [-300.0, 300.0])
def test_heartbeats_of_a_host_five_minutes_off_are_judged_on_the_servers_clock(monkeypatch, shift):
    """A heartbeat written just now by a host 5 minutes behind (or ahead) is fresh to a monitor
    whose clock is right, and one written heartbeat_timeout + 1 s ago is lost: both are on the
    server's clock."""
    from api_seed import seed
    from proc.demo.models import Precheck
    from proc.status import HEARTBEAT_LOST

    real = timeutil.local_utcnow
    monkeypatch.setattr(timeutil, "local_utcnow", lambda: real() + timedelta(seconds=shift))
    db.measure_clock()  # the worker's host measures its offset, then writes its heartbeats
    timeout = 120.0
    fresh = seed(Precheck, "RUNNING", heartbeat=utcnow(), worker_hostname="w1")
    old = seed(Precheck, "RUNNING", heartbeat=utcnow() - timedelta(seconds=timeout + 1), worker_hostname="w1")
    monkeypatch.setattr(timeutil, "local_utcnow", real)
    db.measure_clock()  # the monitor's host, whose clock is right
    found = {str(s.id): s.reason for s in stuck.find()}
    assert str(fresh) not in found
    assert found.get(str(old)) == HEARTBEAT_LOST


@pytest.mark.real_server
def test_the_offset_is_measured_again_every_refresh_interval_in_a_thread(monkeypatch):
    from support import wait_for

    db.database()  # measured at the first use
    real = timeutil.local_utcnow
    monkeypatch.setattr(timeutil, "CLOCK_REFRESH", 0.2)
    monkeypatch.setitem(db._clock_state, "next", 0.0)  # due now
    monkeypatch.setattr(db, "_clock_due", [0.0])
    monkeypatch.setattr(timeutil, "local_utcnow", lambda: real() + timedelta(seconds=120))
    wait_for(lambda: db.database() is not None and abs(timeutil.clock_offset() + 120) < 1.0, timeout=10,
             message="the offset measured again after the host's clock jumped")
