"""The lists' bounds: one query per status asked, a text search that stops at its scan cap
and says so (its cursor continues it), and "N matching" exact up to a cap."""
from __future__ import annotations

from datetime import timedelta

from api import listing
from api_seed import seed
from proc.demo.models import Precheck, Upload
from proc.ops import bulk
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import CommandCounter


def test_several_statuses_are_asked_one_equality_each_newest_window_first(client, monkeypatch):
    seed(Precheck, S.FAILURE)
    seed(Precheck, S.RUNNING)
    asked = []
    real = listing._newest
    monkeypatch.setattr(listing, "_newest", lambda coll, query, *a: asked.append(query) or real(coll, query, *a))
    body = client.get("/api/procs?status=FAILURE,RUNNING&kind=precheck&limit=1").get_json()
    assert len(body["items"]) == 1 and body["next_cursor"]
    assert [q["process_status"] for q in asked] == ["FAILURE", "RUNNING"]


def test_a_page_reads_the_newest_window_first_and_widens_only_when_it_is_not_full(client, monkeypatch):
    newest, recent = seed(Precheck, S.FAILURE, age=10), seed(Precheck, S.FAILURE, age=20)
    old = seed(Precheck, S.FAILURE, age=40 * 86400)
    counter = CommandCounter(monkeypatch)
    body = client.get("/api/procs?status=FAILURE&kind=precheck&limit=1").get_json()
    assert [item["id"] for item in body["items"]] == [str(newest)]
    assert [c[0] for c in counter.calls].count("find") == 1  # the last hour held a full page
    counter.calls.clear()
    body = client.get(f"/api/procs?status=FAILURE&kind=precheck&limit=1&cursor={body['next_cursor']}").get_json()
    assert [item["id"] for item in body["items"]] == [str(recent)]
    assert [c[0] for c in counter.calls].count("find") == len(listing.WINDOWS)  # widened to the end
    body = client.get(f"/api/procs?status=FAILURE&kind=precheck&limit=1&cursor={body['next_cursor']}").get_json()
    assert [item["id"] for item in body["items"]] == [str(old)] and body["next_cursor"] is None


def test_a_next_page_asks_one_range_on_the_last_change_and_lists_ties_once(client, monkeypatch):
    """"After the cursor" is one range on the sort field, merged with the window's: SecantusDB
    serves a status and one range from the index and scans an ``$or`` or ``$and``. Processes
    that changed at the cursor's very time are told apart by ``_id`` in proc; every process is
    listed once, across collections."""
    same = utcnow() - timedelta(seconds=30)
    ids = [seed(cls, S.FAILURE, last_status_change=same) for cls in (Precheck, Precheck, Precheck, Upload, Upload)]
    ids += [seed(Precheck, S.FAILURE, age=5), seed(Upload, S.FAILURE, age=4000)]
    asked = []
    real = listing._newest
    monkeypatch.setattr(listing, "_newest", lambda coll, query, *a: asked.append(query) or real(coll, query, *a))
    seen, cursor = [], ""
    while cursor is not None:
        body = client.get(f"/api/procs?status=FAILURE&limit=2{cursor and '&cursor=' + cursor}").get_json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
    assert sorted(seen) == sorted(str(i) for i in ids)  # each once
    assert not [q for q in asked if "$or" in q or "$and" in q]
    assert [q for q in asked if set(q.get("last_status_change", {})) & {"$lt", "$lte"}]  # the pages after the first
    earlier, later = same - timedelta(hours=1), same + timedelta(hours=1)
    assert listing.with_range({"process_status": "FAILURE", "last_status_change": {"$lte": same}},
                              "last_status_change", {"$gte": earlier}) == {
        "process_status": "FAILURE", "last_status_change": {"$lte": same, "$gte": earlier}}
    assert listing.with_range({"last_status_change": {"$lt": later}}, "last_status_change",
                              {"$lte": same}) == {"last_status_change": {"$lte": same}}  # the tighter bound
    assert listing.with_range({"last_status_change": {"$lte": same}}, "last_status_change",
                              {"$lt": same}) == {"last_status_change": {"$lt": same}}


def test_a_text_search_stops_at_its_cap_says_so_and_its_cursor_continues_it(client, monkeypatch):
    monkeypatch.setattr(listing, "SCAN_CAP", 3)
    wanted = seed(Precheck, S.FAILURE, age=100, errors=["disk full"])
    for age in (1, 2, 3, 4):
        seed(Precheck, S.FAILURE, age=age, errors=["timeout"])
    first = client.get("/api/procs?q=DISK&kind=precheck").get_json()
    assert first["items"] == [] and first["stopped_early"] and first["scan_cap"] == 3
    assert first["next_cursor"]
    second = client.get(f"/api/procs?q=DISK&kind=precheck&cursor={first['next_cursor']}").get_json()
    assert [item["id"] for item in second["items"]] == [str(wanted)]
    assert not second["stopped_early"] and second["next_cursor"] is None


def test_matching_is_exact_up_to_the_cap_and_more_than_the_cap_beyond(client, monkeypatch):
    for _ in range(4):
        seed(Precheck, S.FAILURE)
    page = client.get("/projects/admin/check-status/procs?status=FAILURE").get_data(as_text=True)
    assert "Retry all 4 matching" in page
    monkeypatch.setattr(bulk, "COUNT_CAP", 3)
    page = client.get("/projects/admin/check-status/procs?status=FAILURE").get_data(as_text=True)
    assert "Retry all more than 3 matching" in page
    dry = client.post("/api/procs/bulk", json={"action": "redispatch", "filter": {"status": "FAILURE"},
                                               "dry_run": True}, headers={"X-Proc-Request": "1"})
    assert dry.get_json()["matched"] == 4  # the dry run, an explicit action, counts exactly
