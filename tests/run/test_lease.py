"""Self-fencing: a worker whose heartbeat the database has not accepted for longer than its
lease stops the attempt's code (``set_step()`` raises ``ProcessCancelled``), writes nothing more
for that attempt, and a restart shorter than the lease costs nothing. The startup check keeps
the lease between PROC_DB_OUTAGE_TIMEOUT and heartbeat_timeout - interval - PROC_CLOCK_MARGIN."""
from __future__ import annotations

import re

import pytest
from pymongo.errors import AutoReconnect

from proc import config, machine, registry, startup
from proc.exceptions import ConfigurationError, ProcessCancelled
from proc.run import heartbeat
from support import wait_for
from test_heartbeat import running  # noqa: F401  (a RUNNING Stall document)


@pytest.fixture
def cut(monkeypatch):
    """Heartbeat writes refused as by a cut link while ``cut["on"]``."""
    state = {"on": False}
    real = machine.update_fields

    def refusing(attempt, **kwargs):
        if state["on"] and "heartbeat" in (kwargs.get("fields") or {}):
            raise AutoReconnect("cut off (test)")
        return real(attempt, **kwargs)

    monkeypatch.setattr(machine, "update_fields", refusing)
    return state


def test_a_beat_not_accepted_for_longer_than_the_lease_stops_the_code(cut):
    config.configure(db_outage_timeout=1.0)
    doc, coll = running()
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    try:
        doc.set_step("before")
        cut["on"] = True
        wait_for(lambda: beat.lease_lost is not None, timeout=5, message="the lease to be lost")
        assert beat.lease_lost.startswith("lease lost: heartbeat not accepted for ")
        assert doc.cancel_requested()
        with pytest.raises(ProcessCancelled, match="lease lost: heartbeat not accepted for 1 s"):
            doc.set_step("after")
        cut["on"] = False  # healed: a lost lease stays lost, nothing more is written
        before = coll.find_one({"_id": doc.pk})["heartbeat"]
        beat.write("late step")
        after = coll.find_one({"_id": doc.pk})
        assert after["heartbeat"] == before and after.get("current_process_step") != "late step"
    finally:
        heartbeat.stop(beat)


def test_an_outage_shorter_than_the_lease_costs_nothing(cut):
    config.configure(db_outage_timeout=1.5)
    doc, coll = running()
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    try:
        cut["on"] = True
        wait_for(lambda: beat.failures >= 2, timeout=5, message="two refused beats")
        cut["on"] = False
        wait_for(lambda: beat.failures == 0, timeout=5, message="a beat accepted again")
        assert beat.lease_lost is None
        doc.set_step("still mine")
    finally:
        heartbeat.stop(beat)


def test_self_fencing_can_be_turned_off(cut):
    config.configure(db_outage_timeout=0.5, lease=0)
    doc, coll = running()
    beat = heartbeat.start(machine.Attempt(coll.name, doc.pk, doc.attempt), "w1@test")
    try:
        cut["on"] = True
        wait_for(lambda: beat.failures >= 6, timeout=5, message="beats refused past 0.5 s")
        assert beat.lease_lost is None
        doc.set_step("runs on")
    finally:
        heartbeat.stop(beat)


def test_the_startup_check_keeps_the_lease_between_the_outage_timeout_and_the_heartbeat_timeout():
    # a kind with the default heartbeat timeout (120 s): models loaded by earlier tests may
    # come first with short ones of their own
    kind = next(k for k in registry.kinds() if k.settings.heartbeat_timeout == 120)
    timeout = kind.settings.heartbeat_timeout
    config.configure(db_outage_timeout=60, heartbeat_interval=10, clock_margin=1)
    startup.check_outage_timeout([kind])
    config.configure(db_outage_timeout=60, heartbeat_interval=10, lease=timeout - 10)
    with pytest.raises(ConfigurationError, match=r"lease \(110 s.*minus PROC_HEARTBEAT_INTERVAL \(10 s\) "
                                                 r"and PROC_CLOCK_MARGIN \(1 s\) = 109 s"):
        startup.check_outage_timeout([kind])
    config.configure(db_outage_timeout=60, lease=30)
    with pytest.raises(ConfigurationError, match="PROC_LEASE=30 s is below PROC_DB_OUTAGE_TIMEOUT=60 s"):
        startup.check_outage_timeout([kind])
    config.configure(db_outage_timeout=60, lease=0)
    startup.check_outage_timeout([kind])


@pytest.mark.parametrize("value, problem", [("-1", "0 (self-fencing off) or positive"), ("soon", "not a number")])
def test_a_bad_lease_is_refused_by_name(value, problem):
    with pytest.raises(ConfigurationError, match=f"PROC_LEASE.*{re.escape(problem)}"):
        config.Settings.from_env({"PROC_LEASE": value})
