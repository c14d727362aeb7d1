"""One malformed document never takes a view down (``proc.store.reader``): every view skips a
document whose field has a type proc never writes, counts it and names it ("1 document could
not be read: precheck 65f...: current_process_step is an int"). Each view, each shape, both
database tiers."""
from __future__ import annotations

from datetime import timedelta

import pytest

from api_seed import seed
from api import listing
from api.queries import SUMMARY_FIELDS
from proc import monitor
from proc.store import reader
from proc.monitor import stuck
from proc.ops import bulk
from proc.demo.models import Precheck
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

PAGE = {"X-Proc-Request": "1"}
#: (field, stored value, the problem named)
SHAPES = [
    ("current_process_step", 5, "current_process_step is an int"),
    ("last_status_change", "2024-01-01T00:00:00", "last_status_change is a string"),
    ("attempt", "3", "attempt is a string"),
    ("attempt", -2, "attempt is negative (-2)"),
    ("errors", "boom", "errors is a string"),
    ("errors", ["fine", 5], "errors holds an int"),
    ("current_process", 7, "current_process is an int"),
    ("process_status", 3, "process_status is an int"),
    ("heartbeat", "soon", "heartbeat is a string"),
    ("deadline", 12.5, "deadline is a float"),
    ("history", ["seeded"], "history holds a string"),
    ("worker_hostname", {"host": "w1"}, "worker_hostname is an object"),
]
#: The fields each view reads (a view reads a document it can read: what it does not read
#: cannot stop it).
#: A status that is not text matches none of the status page's queries (each an equality on one
#: status, which an index serves): such a document is not live work, and is not read at all.
STATUS_READS = (set(stuck.PROJECTION) | {"current_process", "last_status_change"}) - {"process_status"}
UNMATCHED = {"process_status"}
LIST_READS = set(SUMMARY_FIELDS)
BULK_READS = set(bulk.PROJECTION)


@pytest.fixture(params=SHAPES, ids=[f"{f}={v!r}" for f, v, _ in SHAPES])
def shape(request):
    """A readable stuck process and an unreadable one (otherwise stuck as well, so the
    needs-attention check reads it): (good id, bad id, the expected message)."""
    name, value, problem = request.param
    now = utcnow()
    stale = {"heartbeat": now - timedelta(hours=2), "deadline": now - timedelta(hours=1)}
    good = seed(Precheck, S.RUNNING, age=9000, **stale)
    bad = seed(Precheck, S.RUNNING, age=9000, **{**stale, name: value})
    return name, good, bad, f"1 document could not be read: precheck {bad}: {problem}"


def test_the_reader_names_the_first_wrong_field():
    assert reader.problem({"_id": 1, "attempt": 2, "errors": ["a"], "current_process_step": None}) is None
    assert reader.problem({"attempt": True}) == "attempt is a boolean"
    many = reader.Unreadable()
    for i in range(25):
        many.add("upload", f"id{i}", "attempt is a string")
    assert many.count == 25 and len(many.shown) == reader.SHOWN
    assert many.message.startswith("25 documents could not be read: upload id0: attempt is a string; upload id1")
    assert many.message.endswith("; and 5 more")


def test_api_status_and_metrics_count_and_name_it(client, shape):
    name, good, bad, message = shape
    response = client.get("/api/status?workers=false")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    attention = {item["id"] for item in body["needs_attention"]}
    expected = 1 if name in STATUS_READS else 0
    assert str(good) in attention and (str(bad) in attention) == (not expected and name not in UNMATCHED)
    assert body["unreadable"]["count"] == expected
    if expected:
        assert body["unreadable"]["message"] == message
        assert body["unreadable"]["documents"] == [{"collection": "precheck", "id": str(bad),
                                                    "problem": message.split(f"{bad}: ")[1]}]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert f"proc_unreadable_documents {float(expected)}" in metrics.get_data(as_text=True)


def test_the_check_status_page_shows_it(client, shape):
    name, good, bad, message = shape
    for url in ("/projects/admin/check-status/", "/projects/admin/check-status/live"):
        response = client.get(url)
        assert response.status_code == 200
        assert (message in response.get_data(as_text=True)) == (name in STATUS_READS)


def test_the_lists_skip_it_and_say_so(client, shape):
    name, good, bad, message = shape
    read = name in LIST_READS
    for sort in ("last_change", "attempt"):
        response = client.get(f"/api/procs?sort={sort}")
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert sorted(item["id"] for item in body["items"]) == sorted([str(good)] + ([] if read else [str(bad)]))
        assert body["unreadable"]["count"] == read and body["unreadable"]["message"] == (message if read else None)
    page = client.get("/projects/admin/check-status/procs")
    assert page.status_code == 200 and (message in page.get_data(as_text=True)) == read


def test_paging_past_an_unreadable_document_neither_repeats_nor_skips(client, shape):
    name, good, bad, message = shape
    others = {str(seed(Precheck, S.FAILURE, age=100 + i)) for i in range(5)} | {str(good)}
    if name not in LIST_READS:
        others.add(str(bad))
    for sort in ("last_change", "attempt"):
        seen, cursor, said = [], None, 0
        for _ in range(20):
            body = client.get("/api/procs", query_string={"sort": sort, "limit": 2,
                                                           **({"cursor": cursor} if cursor else {})}).get_json()
            seen += [item["id"] for item in body["items"]]
            said += body["unreadable"]["count"]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(others), sort
        if name == listing.SORTS[sort]:
            # A sort value of another type is sorted apart by the server and never matches the
            # range of a later page: it is counted on the page it falls in, if any.
            assert said <= 1
        else:
            assert said == (name in LIST_READS), sort


def test_the_detail_shows_it_as_stored_without_a_500(client, shape):
    name, good, bad, message = shape
    problem = message.split(f"{bad}: ")[1]
    response = client.get(f"/api/procs/precheck/{bad}")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["unreadable"] == problem and body["needs_attention"] is None
    assert body["actions"]["redispatch"] is False
    page = client.get(f"/projects/admin/check-status/procs/precheck/{bad}")
    assert page.status_code == 200 and f"This document could not be read: {problem}" in page.get_data(as_text=True)
    assert client.get(f"/api/procs/precheck/{good}").get_json()["unreadable"] is None


def test_a_bulk_action_skips_it_naming_why(client, shape):
    name, good, bad, message = shape
    problem = message.split(f"{bad}: ")[1]
    read = name in BULK_READS
    dry = client.post("/api/procs/bulk", json={"action": "cancel", "filter": {"all": True}, "dry_run": True},
                      headers=PAGE)
    assert dry.status_code == 200 and dry.get_json()["matched"] == 2 and dry.get_json()["would_change"] == 2 - read
    body = client.post("/api/procs/bulk", json={"action": "cancel", "filter": {"all": True}}, headers=PAGE).get_json()
    assert body["changed"] == 2 - read
    assert body["skipped"] == ([{"collection": "precheck", "id": str(bad), "reason": f"could not be read: {problem}"}]
                               if read else [])


def test_the_monitor_judges_the_others_and_leaves_it_alone(shape):
    name, good, bad, message = shape
    later = utcnow() + timedelta(hours=3)
    found = {item.id for item in stuck.find(later)}
    assert good in found and (bad in found) == (name not in STATUS_READS | UNMATCHED)
    before = Precheck._get_collection().find_one({"_id": bad})
    outcome = monitor.check("precheck", bad, before["attempt"], now=later)
    assert outcome.action == monitor.Action.NOTHING
    if name not in ("attempt", "process_status", "current_process"):  # those say "gone" first
        assert outcome.detail == "could not be read: " + message.split(f"{bad}: ")[1]
    assert Precheck._get_collection().find_one({"_id": bad}) == before
