"""Datafix 0003: the time buckets of "where time goes" backfilled from the phases of processes
that ended before proc counted them, up to the cut-off, so nothing is counted twice."""
from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from migrations import command
from proc.cli import cli
from proc.machine import tally
from proc.monitor import timings
from proc.timeutil import utcnow
from timing_models import Napper, seed_ended

KIND = "test_napper.nap"


def ended_before_the_upgrade(values, ago: float) -> None:
    """Ended documents written by a version that did not count them."""
    end = utcnow() - timedelta(seconds=ago)
    Napper._get_collection().insert_many([
        {"process_status": "SUCCESS", "current_process": "nap", "attempt": 1, "complete_time": end,
         "last_status_change": end, "phases": phases} for phases in values])


def run_held(window: int) -> dict:
    return timings.summary(window, (Napper, "nap"))[KIND]["held"]


def test_the_backfill_counts_what_ended_before_the_live_tally_and_nothing_twice(database):
    ended_before_the_upgrade([{"held": float(i)} for i in range(1, 11)], ago=600)
    ended_before_the_upgrade([{"held": 7.0}], ago=5 * 86400)  # hour buckets only
    ended_before_the_upgrade([{"held": 9.0}], ago=40 * 86400)  # beyond the retention
    seed_ended(Napper, "nap", [{"held": 100.0}], ago=1)  # the new version counted this one live
    tally.flush()
    assert run_held(3600)["n"] == 1
    result = CliRunner().invoke(cli, ["datafix", "upgrade", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    held = run_held(3600)
    assert held["n"] == 11 and held["max"] == 100.0  # ten backfilled, the live one not again
    assert run_held(7 * 86400)["n"] == 12 and run_held(tally.RETENTION)["n"] == 12
    assert timings.totals((Napper, "nap"))[KIND]["e"] == {"SUCCESS": 1}  # totals count from the upgrade on
    assert command.upgrade().ok
    assert run_held(3600)["n"] == 11  # one-shot: applied, it does not count again


def test_a_dry_run_writes_no_bucket(database):
    ended_before_the_upgrade([{"held": 1.0}], ago=60)
    command.upgrade(dry_run=True)
    assert tally.collection().count_documents({}) == 0
