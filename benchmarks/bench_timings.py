"""``GET /api/timings`` at 10,000 and 100,000 ended processes, on the embedded database and
on a real server.

For each tier and size: the database round trips of one ``/api/timings`` (the same at every
size: two aggregations per Proc collection, ``proc.timings``) and its time, side by side with
the naive way: read every document of every collection (``phases``, ``complete_time``,
``current_process``, ``process_status``) and compute the same statistics here. Both answers
are compared: they must be equal (exact percentiles at these sizes).

    python -m benchmarks.bench_timings [--sizes 10000 100000] [--real-sizes ...] [--repeat 3]
                                       [--quick] [--tier both|embedded|real]

The real tier is ``MONGODB_URI=mongodb://...`` if set, else a private SecantusDB server
started for the run (``benchmarks.common``). Round trips: mongomock method calls on the
embedded tier, the commands pymongo sent (``getMore`` included) on the real one.
"""
from __future__ import annotations

import argparse
import random
import time
from datetime import timedelta

from benchmarks.common import add_tier_argument, empty_with_indexes, print_tiers, table, tiers, timed
from proc import registry, timings
from proc.phases import PHASES
from proc.timeutil import utcnow

DATABASE = "proc_bench_timings"
WINDOW = 3600
#: Share of the seeded processes that ended within the window (the rest ended earlier).
IN_WINDOW = 0.8


def seed(n: int) -> None:
    """``n`` ended processes spread over the demo's collections, with phases like a worker
    writes them: every one held, most queued, all that ran with run, a few parents waiting."""
    from proc.demo.models import Entry, Precheck, Project, Upload

    rng = random.Random(n)
    classes = [(Entry, "process_entry", {"upload_id": "u", "path": "f"}),
               (Precheck, "run", {"project_id": "p", "check": "c"}),
               (Upload, "process_upload", {"name": "u"}),
               (Project, "run_prechecks", {"name": "p"})]
    now = utcnow()
    for index, (cls, method, fields) in enumerate(classes):
        share = n // len(classes) + (1 if index < n % len(classes) else 0)
        docs = []
        for _ in range(share):
            # (half a window clear of its edge, which moves while the benchmark runs)
            ago = rng.uniform(1, WINDOW / 2) if rng.random() < IN_WINDOW else rng.uniform(1.5 * WINDOW, 4 * WINDOW)
            phases = {"held": round(rng.expovariate(1.0), 3)}
            failed_early = rng.random() < 0.02
            if not failed_early:
                phases.update(queued=round(rng.expovariate(2.0), 3), run=round(rng.lognormvariate(2, 1), 3))
                if method in ("process_upload", "run_prechecks"):
                    phases["waiting"] = round(rng.uniform(5, 120), 3)
            when = now - timedelta(seconds=ago)
            docs.append({**fields, "process_status": "FAILURE" if failed_early or rng.random() < 0.05 else "SUCCESS",
                         "attempt": 1, "current_process": method, "last_status_change": when,
                         "complete_time": when, "create_time": when, "history": [], "errors": [],
                         "warnings": [], "phases": phases, "phases_draw": rng.random()})
        cls._get_collection().insert_many(docs)


def naive(window: int = WINDOW) -> dict:
    """The same answer, from every document read one by one."""
    since = utcnow() - timedelta(seconds=window)
    values: dict[str, dict[str, list]] = {}
    for kind in registry.kinds():
        values[kind.name] = {p: [] for p in PHASES}
    for cls in registry.proc_classes():
        for raw in cls._get_collection().find({}, {"phases": 1, "complete_time": 1, "current_process": 1,
                                                   "process_status": 1}):
            name = f"{cls._get_collection_name()}.{raw.get('current_process')}"
            if (raw.get("process_status") in ("SUCCESS", "FAILURE") and name in values and raw.get("phases")
                    and raw.get("complete_time") and raw["complete_time"] >= since):
                for p, v in raw["phases"].items():
                    if p in values[name]:
                        values[name][p].append(v)
    answer = {}
    for name, phases in sorted(values.items()):
        answer[name] = {}
        for p, found in phases.items():
            found.sort()
            answer[name][p] = ({"n": len(found), "p50": timings.quantile(found, 0.5),
                                "p95": timings.quantile(found, 0.95), "max": found[-1]}
                               if found else timings.empty())
    return answer


def run_tier(tier, sizes, repeat: int) -> list:
    database = tier.connect(DATABASE)
    registry.load_models()
    from api import create_app

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
    rows = []
    for n in sizes:
        empty_with_indexes(database)
        started = time.perf_counter()
        seed(n)
        seeded = time.perf_counter() - started

        def api_timings():
            response = client.get(f"/api/timings?window={WINDOW}")
            assert response.status_code == 200, response.get_data(as_text=True)
            return response.get_json()["kinds"]

        api_time, api_ops, body = timed(tier, api_timings, repeat)
        naive_time, naive_ops, expected = timed(tier, naive, repeat)
        assert body == expected, "the aggregation and the naive loop disagree"
        ended = sum(s["held"]["n"] for s in body.values())
        rows.append({"n": n, "ended": ended, "api": (api_ops, api_time), "naive": (naive_ops, naive_time)})
        print(f"  {tier.name} {n:,}: /api/timings {api_time:.3f} s, naive {naive_time:.3f} s "
              f"(seeded in {seeded:.1f} s)", flush=True)
    tier.drop(DATABASE)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="ended processes, embedded tier")
    parser.add_argument("--real-sizes", type=int, nargs="+", default=None,
                        help="ended processes, real tier (default: --sizes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--sizes 10000 --repeat 1")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [10_000], 1
    sizes = {"embedded": args.sizes, "real": args.real_sizes or args.sizes}

    results = {}
    with tiers(args.tier) as found:
        print(f"GET /api/timings?window={WINDOW}; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, sizes[tier.name], args.repeat)
        collections = len(registry.proc_classes())

    print()
    print(f"{collections} Proc collections, {IN_WINDOW:.0%} of the processes ended in the window, model "
          f"indexes created, median of {args.repeat}; 'trips' = database round trips of one call")
    rows = []
    for name, found_rows in results.items():
        for r in found_rows:
            rows.append([name, f"{r['n']:,}", f"{r['ended']:,}"]
                        + [f"{r[k][0].total} trips, {r[k][1]:.3f} s" for k in ("api", "naive")]
                        + [f"{r['naive'][1] / r['api'][1]:.2f}x"])
    print(table(["tier", "ended processes", "in the window", "/api/timings", "naive read-every-document loop",
                 "naive / api time"], rows, "<>>>>>"))
    for name, found_rows in results.items():
        for r in found_rows:
            print(f"  {name} {r['n']:,} round trips: /api/timings: {r['api'][0].detail()}; "
                  f"naive: {r['naive'][0].detail()}")
    print("/api/timings = two aggregations per Proc collection (counts and max, then the pushed values "
          "sorted here) and the JSON; the naive loop reads every document and computes the same answer.")


if __name__ == "__main__":
    main()
