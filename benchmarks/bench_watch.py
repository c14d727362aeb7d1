"""Watching at any scale: the watched endpoints with the same live work behind more and more history.

The same live work (1,000 processes in active states, 5,000 ended in the last hour) behind
10,000 and 100,000 older ended processes (and 1,000,000 with ``--huge``: the real tier only,
outside CI, minutes and gigabytes to seed), each watched endpoint timed side by side:

- ``/metrics`` (one collection: ``PROC_METRICS_SECONDS`` 0 here, so each scrape computes);
- ``/api/status?workers=false``;
- the page's refresh fragment ``/projects/admin/check-status/live`` (``PROC_PAGE_SECONDS`` 0);
- a filtered list page ``/api/procs?status=FAILURE&kind=precheck.run``;
- ``/api/timings`` (the default window, an hour: the time buckets, ``proc.monitor.timings``).

Every seeded ended process is also counted into the time buckets as its ending write would
have counted it (``proc.machine.tally``), into the buckets still kept at its age, so the
bucket collection holds what a deployment that ran this history holds (its index made as
datafix 0003 makes it).

    python -m benchmarks.bench_watch [--olds 10000 100000] [--huge] [--repeat 3] [--quick]
                                     [--tier both|embedded|real]

On the real tier each endpoint's read commands (seen by the command listener) are explained
with ``executionStats`` afterwards, and the documents and index keys the server examined are
summed: what a scan of the history would make grow. The all-time estimate
(``estimated_document_count``, cached a minute per process, ``api.estimates``) is warmed
before timing and reported on its own. The goal: the largest history at most 1.5x the
smallest on the real tier.
"""
from __future__ import annotations

import argparse
import random
import time
from datetime import timedelta

from benchmarks.common import (
    LISTENER, CommandRecorder, add_tier_argument, empty_with_indexes, make_app, redis_url, run_tiers, table,
    timed,
)
from benchmarks.explain_plans import explain_command, find_key
from proc.machine import tally
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

DATABASE = "proc_bench_watch"
ACTIVE, RECENT = 1_000, 5_000
ENDPOINTS = {
    "/metrics": "/metrics",
    "/api/status": "/api/status?workers=false",
    "page refresh": "/projects/admin/check-status/live",
    "list page": "/api/procs?status=FAILURE&kind=precheck.run",
    "/api/timings": "/api/timings",
}
LIVE = (S.PENDING, S.DISPATCHED, S.RUNNING, S.WAITING_FOR_RESULT)
BATCH = 10_000


def _classes():
    from proc.demo.models import Entry, Precheck, Upload

    return [(Precheck, "run", {"project_id": "p", "check": "c"}),
            (Upload, "process_upload", {"name": "u"}),
            (Entry, "process_entry", {"upload_id": "u", "path": "f"})]


def _insert(n: int, make) -> None:
    """``n`` documents ``make(i, rng)`` -> (class, doc), inserted in batches per class; the
    ended ones counted into the time buckets kept at their age (``_count``)."""
    rng = random.Random(n)
    pending: dict = {}
    counts: dict = {}
    now = utcnow()
    for i in range(n):
        cls, doc = make(i, rng)
        pending.setdefault(cls, []).append(doc)
        if "complete_time" in doc:
            _count(counts, cls, doc, now)
        if len(pending[cls]) >= BATCH:
            cls._get_collection().insert_many(pending.pop(cls))
    for cls, docs in pending.items():
        cls._get_collection().insert_many(docs)
    if counts:
        tally.collection().bulk_write(tally.operations(counts), ordered=False)


def _count(counts: dict, cls, doc: dict, now) -> None:
    """Count an ended ``doc`` as its ending write would have (``proc.machine.tally``), into the
    buckets that are still kept at its age (the flush prunes the others) and its all-time total."""
    age = (now - doc["complete_time"]).total_seconds()
    widths = tuple(width for width, kept in tally.KEPT.items() if age < kept)
    tally.add(counts, f"{cls._get_collection_name()}.{doc['current_process']}", doc["process_status"],
              doc["phases"], doc["complete_time"], widths=widths)


def _doc(cls_fields, status, when, now, **extra):
    cls, method, fields = cls_fields
    doc = {**fields, "process_status": status.value, "attempt": 1, "current_process": method,
           "last_status_change": when, "create_time": when - timedelta(seconds=5), "history": [],
           "errors": ["boom"] if status == S.FAILURE else [], "warnings": [], **extra}
    if status in (S.SUCCESS, S.FAILURE):
        doc.update(complete_time=when, phases={"held": 0.1, "queued": 0.5, "run": 2.0})
    return cls, doc


def seed_live(now) -> None:
    """The live work: ``ACTIVE`` processes in active states (fresh: none needs attention) and
    ``RECENT`` that ended in the last hour."""
    classes = _classes()

    def active(i, rng):
        status = LIVE[i % len(LIVE)]
        extra = {}
        if status in (S.RUNNING, S.WAITING_FOR_RESULT):
            extra = {"heartbeat": now, "deadline": now + timedelta(hours=1), "worker_hostname": "w@bench"}
        return _doc(classes[i % len(classes)], status, now - timedelta(seconds=rng.uniform(1, 30)), now, **extra)

    def recent(i, rng):
        status = S.FAILURE if i % 10 == 0 else S.SUCCESS
        return _doc(classes[i % len(classes)], status, now - timedelta(seconds=rng.uniform(1, 3500)), now)

    _insert(ACTIVE, active)
    _insert(RECENT, recent)


def seed_old(n: int, now) -> None:
    """``n`` processes that ended 2 to 60 days ago."""
    classes = _classes()

    def old(i, rng):
        status = S.FAILURE if i % 10 == 0 else S.SUCCESS
        return _doc(classes[i % len(classes)], status, now - timedelta(days=rng.uniform(2, 60)), now)

    _insert(n, old)


def examined(database, commands) -> tuple[int, int, int]:
    """(documents examined, index keys examined, read commands) of ``commands`` as the server
    explains them now (``executionStats``): a count without a filter (the all-time estimate)
    and commands explain cannot take are left out."""
    docs = keys = reads = 0
    for name, command in commands:
        if name not in ("find", "aggregate", "count") or (name == "count" and not command.get("query")):
            continue
        reads += 1
        answer = database.command({"explain": explain_command(name, command), "verbosity": "executionStats"})
        docs += find_key(answer, "totalDocsExamined") or 0
        keys += find_key(answer, "totalKeysExamined") or 0
    return docs, keys, reads


def measure(tier, client, database, repeat: int) -> dict:
    """Per endpoint: (median seconds, round trips, examined or None)."""
    out = {}
    for label, url in ENDPOINTS.items():
        def get(url=url):
            response = client.get(url)
            assert response.status_code == 200, response.get_data(as_text=True)[:500]
            return response

        get()  # warm: the all-time estimate and the broker look are cached a while
        seconds, ops, _ = timed(tier, get, repeat)
        seen = None
        if tier.real:
            recorder = CommandRecorder()
            LISTENER.add(recorder)
            try:
                get()
            finally:
                LISTENER.remove(recorder)
            seen = examined(database, [(name, cmd) for _, name, cmd in recorder.commands])
        out[label] = (seconds, ops.total, seen)
    return out


def run_tier(tier, olds: list[int], repeat: int) -> list:
    database = tier.connect(DATABASE)
    from proc import registry

    registry.load_models()
    make_app(redis_url())
    from api import create_app, estimates

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None, "PROC_INSPECT_TIMEOUT": 0.05,
                         "PROC_PAGE_SECONDS": 0, "PROC_METRICS_SECONDS": 0}).test_client()
    empty_with_indexes(database)
    tally.collection().create_index(tally.INDEX)  # as datafix 0003 makes it
    now = utcnow()
    seed_live(now)
    rows, have = [], 0
    for n in sorted(olds):
        started = time.perf_counter()
        seed_old(n - have, now)
        have = n
        seeded = time.perf_counter() - started
        estimates.forget_estimates()
        started = time.perf_counter()
        estimates.estimated_total(registry.proc_classes()[0])
        estimate = time.perf_counter() - started
        found = measure(tier, client, database, repeat)
        rows.append({"old": n, "found": found, "estimate": estimate, "seeded": seeded})
        print(f"  {tier.name} {n:,} old: " + ", ".join(f"{k} {v[0]:.3f} s" for k, v in found.items())
              + f" (seeded in {seeded:.0f} s)", flush=True)
    tier.drop(DATABASE)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--olds", type=int, nargs="+", default=[10_000, 100_000],
                        help="older ended processes behind the live work, both tiers")
    parser.add_argument("--huge", action="store_true",
                        help="add 1,000,000 older ended processes on the real tier (minutes, gigabytes)")
    parser.add_argument("--live", type=int, nargs=2, default=None, metavar=("ACTIVE", "RECENT"),
                        help="the live work (default 1000 5000; --smoke makes it small)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--olds 10000 --repeat 1")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    global ACTIVE, RECENT
    if args.live:
        ACTIVE, RECENT = args.live
    if args.quick:
        args.olds, args.repeat = [10_000], 1
    results = run_tiers(args.tier, "the watched endpoints, the same live work behind more history; tiers:",
                        lambda tier, olds: run_tier(tier, olds, args.repeat),
                        {"embedded": args.olds, "real": args.olds + ([1_000_000] if args.huge else [])})

    print()
    print(f"live work: {ACTIVE:,} active, {RECENT:,} ended in the last hour; median of {args.repeat}; "
          "real tier: documents / index keys examined by the server (explain), read commands")
    rows = []
    for name, found_rows in results.items():
        for r in found_rows:
            cells = []
            for label in ENDPOINTS:
                seconds, trips, seen = r["found"][label]
                cells.append(f"{seconds:.3f} s, {trips} trips" + (f", {seen[0]}/{seen[1]} ex" if seen else ""))
            rows.append([name, f"{r['old']:,}", *cells, f"{r['estimate']:.3f} s"])
    print(table(["tier", "old ended", *ENDPOINTS, "all-time estimate (1/min)"], rows, "<>" + ">" * (len(ENDPOINTS) + 1)))
    for name, found_rows in results.items():
        if len(found_rows) > 1:
            first, last = found_rows[0]["found"], found_rows[-1]["found"]
            ratios = ", ".join(f"{k} {last[k][0] / max(first[k][0], 1e-9):.2f}x" for k in ENDPOINTS)
            print(f"  {name}: largest / smallest history: {ratios}")


if __name__ == "__main__":
    main()
