"""Watching costs what the live work costs, never what the history costs (real tier).

The same live work behind 50x more old ended processes: every read command a watched
endpoint sends is explained (``executionStats``) and the documents and index keys the server
examined are summed. A scan of the history would make them grow with it; an index that
serves the query keeps them where the live work puts them. No read may name its index (a
``hint``): SecantusDB then walks the whole index, and its explain does not say so. No wall
time is asserted."""
from __future__ import annotations

import pytest

import support
from benchmarks import bench_watch
from proc.machine import tally
from proc.timeutil import utcnow

pytestmark = pytest.mark.real_server

ENDPOINTS = [
    "/api/status?workers=false",
    "/projects/admin/check-status/live",
    "/api/procs?status=FAILURE&kind=precheck.run&limit=3",
    "/api/procs?status=RUNNING&sort=attempt",
    "/metrics",
    "/api/timings",
    "next page of /api/procs?status=FAILURE&kind=precheck.run&limit=3",  # with the first page's cursor
]
NEXT = "next page of "


def resolved(url: str, client) -> str:
    """``url``, or for a next page the first page's URL with that page's cursor."""
    if not url.startswith(NEXT):
        return url
    first = url[len(NEXT):]
    return f"{first}&cursor={client.get(first).get_json()['next_cursor']}"



def examined(database, url: str, client) -> tuple[int, int, list]:
    """(documents, index keys examined, the read commands' shapes) of one GET of ``url``."""
    with support.commands_sent() as sent:
        response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    docs, keys, _ = bench_watch.examined(database, sent)
    reads = [(name, cmd) for name, cmd in sent if name in ("find", "aggregate", "count")]
    # A named index walks the whole index on SecantusDB (every document of the collection)
    # while its explain reports only the keys in range: no watched read may name one.
    assert not [cmd for _, cmd in reads if "hint" in cmd], f"{url}: a read names its index (hint)"
    shapes = sorted(f"{name} {cmd.get(name)}" for name, cmd in reads)
    return docs, keys, shapes


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_watched_endpoint_examines_the_same_documents_behind_50x_more_history(database, url, monkeypatch):
    if not support.real_tier():
        pytest.skip("the real tier: the server says what it examined (pytest --real-server)")
    client = support.make_flask_app(inspect_timeout=0.05).test_client()
    monkeypatch.setattr(bench_watch, "ACTIVE", 40)
    monkeypatch.setattr(bench_watch, "RECENT", 200)
    tally.collection().create_index(tally.INDEX)  # as datafix 0003 makes it
    now = utcnow()
    bench_watch.seed_live(now)
    bench_watch.seed_old(40, now)
    client.get(resolved(url, client))  # the all-time estimate is cached from here on, as in production
    small = examined(database, resolved(url, client), client)
    bench_watch.seed_old(2000 - 40, now)
    large = examined(database, resolved(url, client), client)
    assert large[2] == small[2]  # the same queries
    assert large[:2] == small[:2], f"{url}: examined (documents, keys) {small[:2]} -> {large[:2]}"
    assert small[0] <= 40 + 200 + 50  # at most the live work and a constant
