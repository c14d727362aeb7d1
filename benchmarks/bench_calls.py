"""Python calls per lifecycle: the work proc does for one process, counted, not timed.

Timings of the in-process lifecycle (``bench_lifecycle``) move by up to a third from one round
to the next on a shared 2-core machine, bare Celery (c) included: its GIL-bound threads run
in phases that last whole rounds. Which Python functions and builtins a lifecycle calls does
not depend on that, so the count settles what a timing cannot: whether a change made proc's
own work per process grow, relative to the same baselines, measured in the same process:

  (a') proc, ``@process(monitor_checks=False)``: READY -> PENDING -> DISPATCHED -> RUNNING ->
       SUCCESS (the tracking itself)
  (b)  naive: the caller ``save()``s PENDING and sends a bare task that loads the document and
       ``save()``s RUNNING, then SUCCESS
  (c)  bare: a no-op Celery task (the floor)

Every call made in this process while a variant's ``n`` lifecycles run (caller, worker
threads, heartbeat threads) is counted by a profile hook (``sys.setprofile`` /
``threading.setprofile``): Python functions and builtins alike. The ratios are the naive and
bare counts over proc's (higher is better for proc, like a speed ratio). The kombu event
loop's idle polling is counted too; it is small and the same for every variant.

    python -m benchmarks.bench_calls [--n 300] [--rounds 2] [--concurrency 4] [--quick]

The embedded tier only: on a real server the database's work is in the server, which is not
counted. The models, tasks, submit loops and their bookkeeping are ``bench_lifecycle``'s.
Both use only names proc has had since its first release (``Proc``, ``process``, ``config``,
``db``, ``machine.listeners``, ``inprocess``, and ``make_app`` from ``messaging`` or, before the
redesign, ``proc.celeryconf``), under the names of the layered layout (``proc.store.db``,
``proc.run.messaging``); ``benchmarks.compare`` serves them under those names in a tree of the
flat layout (its ``LAYOUT`` prelude), so ``python -m benchmarks.compare --bench-from new calls``
counts an older revision with these scripts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
from collections import Counter

from benchmarks import bench_lifecycle as bl
from proc import config, machine
from proc.store import db

try:  # since the redesign (proc.messaging before the layers: benchmarks.compare's LAYOUT)
    from proc.run.messaging import make_app as _make_app, set_app as _set_app
except ImportError:  # before it
    from proc.celeryconf import make_app as _make_app, set_app as _set_app

_calls: Counter = Counter()
_counting = False


def _profile(frame, event, arg):
    if _counting and (event == "call" or event == "c_call"):
        _calls[threading.get_ident()] += 1  # one key per thread: no lost increments


VARIANTS = (("a2", "(a') proc, sweep-only monitor", bl.BenchTrackedSweepOnly, bl.submit_tracked),
            ("b", "(b) naive save() tracking", bl.BenchNaive, bl.submit_naive),
            ("c", "(c) bare Celery, no tracking", bl.BenchNaive, bl.submit_bare))


def count(cls, submit, n: int, *, counted: bool = True) -> float:
    """Calls per lifecycle over ``n`` lifecycles (``counted=False``: a warm-up)."""
    global _counting
    docs = bl._fresh(cls, n)
    _calls.clear()
    _counting = counted
    try:
        bl._timed(n, lambda: submit(docs))
    finally:
        _counting = False
    return sum(_calls.values()) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="lifecycles per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="--n 100 --rounds 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 100, 1

    import redis

    from benchmarks.common import redis_url
    from proc.run.inprocess import in_process_worker

    broker = redis_url()
    config.configure(mongodb_uri="mongomock://localhost/proc_bench_calls", broker_url=broker)
    db.connect()
    app = _make_app()
    prefix = f"procbench-calls-{id(app):x}-"
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": prefix}
    _set_app(app)
    machine.listeners.append(bl._on_transition)
    sys.setprofile(_profile)
    threading.setprofile(_profile)  # every thread started from here on: the worker's included
    results = {key: [] for key, *_ in VARIANTS}
    try:
        with in_process_worker(app, concurrency=args.concurrency, loglevel="ERROR", shutdown_timeout=60):
            for _, _, cls, submit in VARIANTS:
                count(cls, submit, min(50, args.n), counted=False)
            for r in range(args.rounds):
                for key, _, cls, submit in VARIANTS:
                    results[key].append(count(cls, submit, args.n))
                print(f"  round {r + 1}: " + "  ".join(
                    f"{label.split()[0]} {results[key][-1]:8.0f}" for key, label, *_ in VARIANTS), flush=True)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        client = redis.Redis.from_url(broker)
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    med = {key: statistics.median(v) for key, v in results.items()}
    print(f"\nPython calls per lifecycle (functions and builtins, every thread), embedded database, "
          f"{args.n} lifecycles per variant, median of {args.rounds} round(s):")
    for key, label, *_ in VARIANTS:
        print(f"  {label:<32} {med[key]:9.0f}")
    print(f"  ratio calls (b)/(a')  {med['b'] / med['a2']:.3f}x  (naive's work over proc's: higher is better)")
    print(f"  ratio calls (c)/(a')  {med['c'] / med['a2']:.3f}x  (the floor's work over proc's)")


if __name__ == "__main__":
    main()
