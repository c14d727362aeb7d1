"""GET /api/timings and proc.timings: per kind and phase, n / p50 / p95 / max over the
processes that ended in a window, in a fixed number of aggregations per collection."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from proc import timings
from proc.phases import PHASES
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
    assert stats["held"]["max"] >= round(longest_wait, 3) >= 0.5  # two others ran first
    assert stats["waiting"] == timings.empty()


def test_every_kind_and_every_phase_is_present_with_n_zero_and_nulls_when_none(client):
    body = get(client)
    assert body["window_seconds"] == 3600
    assert KIND in body["kinds"] and "test_brood.hatch" in body["kinds"]
    for kind, stats in body["kinds"].items():
        assert list(stats) == list(PHASES)
        assert all(s == {"n": 0, "p50": None, "p95": None, "max": None} for s in stats.values()), kind


def test_percentiles_are_exact_nearest_rank_values(client):
    values = list(range(1, 1001))
    random.Random(1).shuffle(values)
    seed([{"held": float(v), "run": v / 10} for v in values])
    stats = get(client, f"?kind=test_napper")["kinds"][KIND]
    assert stats["held"] == {"n": 1000, "p50": 500.0, "p95": 950.0, "max": 1000.0}
    assert stats["run"] == {"n": 1000, "p50": 50.0, "p95": 95.0, "max": 100.0}
    assert stats["queued"]["n"] == 0 and stats["waiting"]["n"] == 0


def test_only_processes_that_ended_in_the_window_with_phases_count(client):
    seed([{"held": 1.0}], ago=30)
    seed([{"held": 100.0}], ago=7200)  # ended before the window
    seed([{"held": 50.0}], status="RUNNING")  # a new attempt under way: its old phases do not count
    Napper._get_collection().insert_one({"process_status": "SUCCESS", "current_process": "nap",
                                         "complete_time": utcnow()})  # written before phases existed
    assert get(client, "?window=60")["kinds"][KIND]["held"] == {"n": 1, "p50": 1.0, "p95": 1.0, "max": 1.0}
    assert get(client, "?window=86400")["kinds"][KIND]["held"]["n"] == 2


def test_the_cost_is_two_aggregations_per_collection_whatever_the_number(database, monkeypatch):
    calls = []
    for size in (10, 400):
        seed([{"held": float(i), "run": 1.0} for i in range(size)])
        counter = CommandCounter(monkeypatch)
        timings.summary(3600, (Napper, None))
        calls.append(sorted(counter.calls))
        monkeypatch.undo()
    assert calls[0] == calls[1]  # the same operations at both sizes
    # (mongomock's aggregate runs a find inside: only a real server's commands are round trips;
    # there, the counts' {_id, n: {$sum: 1}} group is named count_documents by the counter)
    aggregates = [c for c in calls[0] if c[0] in ("aggregate", "count_documents")]
    assert len(aggregates) == 2 and {c[1] for c in aggregates} == {"test_napper"}


def test_above_the_exact_limit_percentiles_come_from_a_bounded_uniform_sample(database):
    values = list(range(1, 4001))
    random.Random(3).shuffle(values)
    seed([{"run": float(v)} for v in values])
    log = []
    stats = timings.summary(3600, (Napper, "nap"), exact_limit=400, query_log=log)[KIND]["run"]
    assert stats["n"] == 4000 and stats["max"] == 4000.0  # always exact
    # m ~ 400 sampled values: DKW at 99.99% gives a rank error below 0.11
    assert abs(stats["p50"] / 4000 - 0.5) < 0.11 and abs(stats["p95"] / 4000 - 0.95) < 0.11
    assert stats["p50"] != 2000.0 or stats["p95"] != 3800.0  # it did sample
    assert len(log) == 3 and "phases_draw" in repr(log[2][1])  # counts, exact n and max, sample


@pytest.mark.parametrize("query, parameter", [
    ("?window=abc", "window"), ("?window=0", "window"), ("?window=-5", "window"), ("?window=1.5", "window"),
    ("?window=2592001", "window"), ("?kind=nope", "kind"), ("?kind=test_napper.nope", "kind"),
])
def test_a_bad_parameter_answers_400_naming_it(client, query, parameter):
    body = get(client, query, status=400)
    assert body["parameter"] == parameter and body["status"] == 400
    assert parameter in body["error"]


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
    assert "workers are too few or busy: p95 wait 3m 50s against a 5m queue timeout" in panel
    assert panel.count("too few or busy") == 1
    assert "p50 2.00 s · p95 2.00 s" in panel and 'href="/projects/admin/check-status/procs?kind=precheck.run"' in panel


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
