"""GET /api/timings and proc.monitor.timings: per kind and phase, n / p50 / p95 / max over the
processes that ended in a window, read from the time buckets (proc.machine.buckets, tally)."""
from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest

from api import where
from proc.machine import buckets, tally
from proc.monitor import timings
from proc.machine.phases import PHASES
from proc.timeutil import utcnow
from support import CommandCounter
from timing_models import Napper, naps_in_turn, seed_ended

KIND = "test_napper.nap"


def seed(values, **kw) -> None:
    seed_ended(Napper, "nap", values, **kw)


def get(client, query: str = "", status: int = 200) -> dict:
    response = client.get(f"/api/timings{query}")
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_sleeps_under_a_limit_of_one_show_as_run_and_the_last_one_waited_as_held(client, worker):
    docs = naps_in_turn(0.3)
    longest_wait = max((d.history[1]["time"] - d.history[0]["time"]).total_seconds() for d in docs)
    stats = get(client, f"?kind={KIND}")["kinds"][KIND]
    assert stats["run"]["n"] == 3 and stats["held"]["n"] == 3
    assert 0.3 <= stats["run"]["p50"] < 1.3, stats
    # two others ran first; the history keeps milliseconds and the phase is timed by the writer's
    # own clock reading beside that write, so the two may differ by a few milliseconds
    assert longest_wait >= 0.5 and abs(stats["held"]["max"] - longest_wait) < 0.02, (stats, longest_wait)
    assert stats["waiting"] == timings.empty()


def test_every_kind_and_every_phase_is_present_with_n_zero_and_nulls_when_none(client):
    body = get(client)
    assert body["window_seconds"] == 3600
    assert KIND in body["kinds"] and "test_brood.hatch" in body["kinds"]
    for kind, stats in body["kinds"].items():
        assert list(stats) == list(PHASES)
        assert all(s == {"n": 0, "p50": None, "p95": None, "max": None} for s in stats.values()), kind


def exact(values, q):
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def within(estimate, true) -> bool:
    return abs(estimate - true) <= buckets.ERROR * true + 1e-9


def test_percentiles_are_the_nearest_rank_values_within_the_stated_relative_error(client):
    values = list(range(1, 1001))
    random.Random(1).shuffle(values)
    seed([{"held": float(v), "run": v / 10} for v in values])
    stats = get(client, f"?kind=test_napper")["kinds"][KIND]
    assert stats["held"]["n"] == 1000 and stats["held"]["max"] == 1000.0  # exact
    assert within(stats["held"]["p50"], 500.0) and within(stats["held"]["p95"], 950.0)
    assert within(stats["run"]["p50"], 50.0) and within(stats["run"]["p95"], 95.0)
    assert stats["held"]["p50"] != 500.0  # an estimate, not the exact value
    assert stats["queued"]["n"] == 0 and stats["waiting"]["n"] == 0


@pytest.mark.parametrize("draw", [
    lambda r: r.lognormvariate(0, 2),  # from milliseconds to hours
    lambda r: r.expovariate(1 / 30),
    lambda r: r.uniform(0.001, 5),
    lambda r: round(r.paretovariate(1.2), 3),
])
def test_bucket_quantiles_of_a_known_distribution_are_within_the_error_at_every_rank(draw):
    rng = random.Random(11)
    values = [draw(rng) for _ in range(20000)]
    counts = {}
    for v in values:
        counts[buckets.key(v)] = counts.get(buckets.key(v), 0) + 1
    assert buckets.RATIO <= 1.1 and buckets.ERROR <= 0.05
    for q in (0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        true = exact(values, q)
        assert within(buckets.quantile(counts, q, max(values)), true), (q, true)


def test_the_coarse_metric_bounds_are_bucket_bounds_so_their_counts_are_exact():
    rng = random.Random(5)
    values = [round(rng.lognormvariate(1, 3), 3) for _ in range(5000)] + [1.0, 2.0, 5.0, 0.0, 0.01]
    counts = {}
    for v in values:
        counts[buckets.key(v)] = counts.get(buckets.key(v), 0) + 1
    assert buckets.cumulative(counts) == [(le, sum(v <= le for v in values)) for le in buckets.COARSE]


def test_only_processes_that_ended_in_the_window_with_phases_count(client):
    seed([{"held": 1.0}], ago=30)
    seed([{"held": 100.0}], ago=7200)  # ended before the window
    seed([{"held": 50.0}], status="RUNNING")  # a new attempt under way: its old phases do not count
    Napper._get_collection().insert_one({"process_status": "SUCCESS", "current_process": "nap",
                                         "complete_time": utcnow()})  # written before phases existed
    held = get(client, "?window=60")["kinds"][KIND]["held"]
    assert held["n"] == 1 and held["max"] == 1.0 and within(held["p50"], 1.0) and held["p95"] == held["p50"]
    assert get(client, "?window=86400")["kinds"][KIND]["held"]["n"] == 2


def test_the_cost_is_one_find_of_the_buckets_whatever_the_number_of_processes(database, monkeypatch):
    calls = []
    for size in (10, 400):
        seed([{"held": float(i), "run": 1.0} for i in range(size)])
        tally.flush()
        counter = CommandCounter(monkeypatch)
        log = []
        timings.summary(3600, (Napper, None), query_log=log)
        calls.append(sorted(counter.calls))
        monkeypatch.undo()
        assert [name for name, _ in log] == [tally.COLLECTION]
    assert calls[0] == calls[1]  # the same operations at both sizes
    assert [c[0] for c in calls[0]] == ["find"] and not any("test_napper" in repr(c) for c in calls[0])


def test_a_window_is_rounded_back_to_the_start_of_its_bucket(client):
    seed([{"held": 3.0}], ago=80)  # ended 80 s ago: in the bucket that holds now - 60 s or the one before
    body = get(client, "?window=60")
    since = datetime.fromisoformat(body["since"].rstrip("Z"))
    assert body["bucket_seconds"] == 60 and since.second == 0 and since.microsecond == 0
    assert utcnow() - timedelta(seconds=120) <= since <= utcnow() - timedelta(seconds=60)
    counted = get(client, "?window=60")["kinds"][KIND]["held"]["n"]
    assert counted == (1 if since <= utcnow() - timedelta(seconds=80) else 0)
    assert get(client, "?window=90000")["bucket_seconds"] == 3600  # beyond a day: hours


@pytest.mark.parametrize("query, parameter", [
    ("?window=abc", "window"), ("?window=0", "window"), ("?window=-5", "window"), ("?window=1.5", "window"),
    ("?window=2592001", "window"), ("?kind=nope", "kind"), ("?kind=test_napper.nope", "kind"),
])
def test_a_bad_parameter_answers_400_naming_it(client, query, parameter):
    body = get(client, query, status=400)
    assert body["parameter"] == parameter and body["status"] == 400
    assert parameter in body["error"]


def test_a_window_beyond_the_retention_answers_400_naming_the_retention(client):
    body = get(client, f"?window={tally.RETENTION + 1}", status=400)
    assert "retention" in body["error"] and "30 days" in body["error"] and str(tally.RETENTION) in body["error"]


def test_the_largest_window_is_thirty_days(client):
    assert get(client, "?window=2592000")["window_seconds"] == 2592000


def test_the_page_panel_shows_bars_per_kind_and_marks_a_kind_short_of_workers(client):
    from proc.demo.models import Precheck

    seed_ended(Precheck, "run", [{"held": 1.0, "queued": 10.0 * i, "run": 30.0} for i in range(1, 25)])
    seed([{"held": 0.5, "queued": 0.0, "run": 2.0}])
    page = client.get("/projects/admin/check-status/live").get_data(as_text=True)
    panel = page[page.index('id="timings"'):]
    assert panel.count("<svg") == 2 and panel.count('class="bar p95"') == 6
    # precheck.run: p95 queued 230 s > half its 300 s queue timeout
    p95 = where.seconds_text(buckets.quantile({buckets.key(230.0): 1}, 0.95))  # 230 s, as the buckets give it
    assert f"workers are too few or busy: p95 wait {p95} against a 5m queue timeout" in panel
    assert panel.count("too few or busy") == 1
    two = where.seconds_text(buckets.quantile({buckets.key(2.0): 1}, 0.5))
    assert f"p50 {two} · p95 {two}" in panel and "within 5%" in panel and 'href="/projects/admin/check-status/procs?kind=precheck.run"' in panel


def test_the_panel_is_computed_at_most_once_per_timings_interval():
    from support import make_flask_app

    def ended_shown(client) -> str:
        page = client.get("/projects/admin/check-status/live").get_data(as_text=True)
        return page[page.index('data-kind="test_napper.nap"'):].split(" ended")[0].rsplit(">", 1)[-1]

    seed([{"held": 1.0}])
    cached = make_flask_app(PROC_TIMINGS_SECONDS=3600).test_client()
    fresh = make_flask_app(PROC_TIMINGS_SECONDS=0).test_client()
    assert ended_shown(cached) == ended_shown(fresh) == "1"
    seed([{"held": 2.0}])
    assert ended_shown(cached) == "1"  # within its interval: the same panel
    assert ended_shown(fresh) == "2"
