"""Processes per second: proc's tracked lifecycle vs. naive save() tracking vs. bare Celery.

Same Redis broker, same in-process worker (thread pool), equal fresh collections,
N processes each, the three variants interleaved over several rounds:

  (a) proc: ``doc.noop()`` - READY -> PENDING -> DISPATCHED -> RUNNING -> SUCCESS, with every
      default, including the per-process monitor check (one more Celery message per process,
      revoked in batches when it finishes)
  (a') the same with ``monitor_checks=False`` (the periodic sweep alone guards the kind): the
      cost of the tracking itself
  (b) naive: a bare Celery task; the caller ``save()``s status PENDING before sending, the
      worker loads the document and ``save()``s RUNNING, then SUCCESS (what users write by hand)
  (c) bare: a no-op Celery task with no tracking (the floor)

Then counts the database operations of one lifecycle of (a) and (b).

    python -m benchmarks.bench_lifecycle [--n 1000] [--real-n 300] [--rounds 3] [--concurrency 4]
                                         [--quick] [--tier both|embedded|real]

Both tiers in one run, one after the other, each with its own in-process worker connected to
that tier (the embedded database; then ``MONGODB_URI=mongodb://...`` if set, else a private
SecantusDB server started for the run). Round trips: mongomock method calls on the embedded
tier, the commands pymongo sent (a ``CommandListener``, every thread) on the real one.
"""
from __future__ import annotations

import argparse
import functools
import threading
import time

from celery import shared_task
from mongoengine import StringField

from benchmarks.common import (add_tier_argument, interleaved, make_app, print_tiers, redis_url, table, tiers,
                               worker)
from proc import Proc, machine, process
from proc.store import db

DATABASE = "proc_bench_lifecycle"

_done = {"n": 0, "target": 0}
_done_lock = threading.Lock()
_all_done = threading.Event()


def _finished():
    with _done_lock:
        _done["n"] += 1
        if _done["n"] >= _done["target"]:
            _all_done.set()


class BenchTracked(Proc):
    meta = {"collection": "bench_tracked"}

    @process
    def noop(self):
        pass


class BenchTrackedSweepOnly(Proc):
    meta = {"collection": "bench_tracked_sweep"}

    @process(monitor_checks=False)
    def noop(self):
        pass


class BenchNaive(Proc):
    """The same fields; (b) writes its status with plain save(), as hand-written code does."""

    meta = {"collection": "bench_naive"}
    status = StringField(default="READY")


@shared_task(name="bench.naive", ignore_result=True, acks_late=True)
def naive_task(doc_id):
    doc = BenchNaive.objects.get(pk=doc_id)
    doc.status = "RUNNING"
    doc.save()
    doc.status = "SUCCESS"
    doc.save()
    _finished()


@shared_task(name="bench.bare", ignore_result=True, acks_late=True)
def bare_task(doc_id):
    _finished()


def _on_transition(t):
    if t.collection.startswith("bench_tracked") and t.target.value == "SUCCESS":
        _finished()


def _fresh(cls, n):
    db.database().drop_collection(cls._get_collection_name())
    cls._collection = None
    docs = [cls() for _ in range(n)]
    cls.objects.insert(docs, load_bulk=False)
    return list(cls.objects.only("id"))


def _timed(n, submit) -> float:
    _done.update(n=0, target=n)
    _all_done.clear()
    started = time.perf_counter()
    submit()
    if not _all_done.wait(timeout=600):
        raise SystemExit(f"only {_done['n']} of {n} finished within 600 s")
    return n / (time.perf_counter() - started)


def submit_tracked(docs):
    """(a) and (a'): call the process on each document."""
    for d in docs:
        d.noop()


def submit_naive(docs):
    """(b): save PENDING, then send the bare task that saves RUNNING and SUCCESS."""
    for d in docs:
        d.status = "PENDING"
        d.save()
        naive_task.apply_async(args=[str(d.pk)])


def submit_bare(docs):
    """(c): send a no-op task per document."""
    for d in docs:
        bare_task.apply_async(args=[str(d.pk)])


def run_a(n):
    docs = _fresh(BenchTracked, n)
    return _timed(n, lambda: submit_tracked(docs))


def run_a2(n):
    docs = _fresh(BenchTrackedSweepOnly, n)
    return _timed(n, lambda: submit_tracked(docs))


def run_b(n):
    docs = _fresh(BenchNaive, n)
    return _timed(n, lambda: submit_naive(docs))


def run_c(n):
    docs = _fresh(BenchNaive, n)
    return _timed(n, lambda: submit_bare(docs))


def count_ops(tier):
    """Round trips of one lifecycle of (a) and of (b), the document already saved (on the real
    tier the commands pymongo sent, from every thread; on the embedded one the method calls)."""

    results = {}
    doc = _fresh(BenchTracked, 1)[0]
    doc_done = threading.Event()

    def one_done(t):
        if t.target.value == "SUCCESS":
            doc_done.set()

    machine.listeners.append(one_done)
    try:
        with tier.counter() as ops:
            doc.noop()
            doc_done.wait(30)
            time.sleep(0.5)  # what the worker still writes after the final transition is counted too
    finally:
        machine.listeners.remove(one_done)
    results["a"] = ops
    naive = _fresh(BenchNaive, 1)[0]
    _done.update(n=0, target=1)
    _all_done.clear()
    with tier.counter() as ops:
        naive.status = "PENDING"
        naive.save()
        naive_task.apply_async(args=[str(naive.pk)])
        _all_done.wait(30)
        time.sleep(0.5)
    results["b"] = ops
    return results


VARIANTS = (("a", "(a) proc tracked lifecycle"), ("a2", "(a') proc, sweep-only monitor"),
            ("b", "(b) naive save() tracking"), ("c", "(c) bare Celery, no tracking"))


def run_tier(tier, n: int, rounds: int, concurrency: int, broker: str) -> dict:
    """Every variant, interleaved over ``rounds``, on one tier; its own worker and app."""
    tier.connect(DATABASE)
    app = make_app(broker)
    runs = {"a": run_a, "a2": run_a2, "b": run_b, "c": run_c}
    labels = {key: label.split()[0] for key, label in VARIANTS}
    with worker(app, concurrency):
        for fn in runs.values():
            fn(min(50, n))  # warm up connections and code paths
        median = interleaved(tier.name, rounds, {key: functools.partial(fn, n) for key, fn in runs.items()},
                             labels.get)
        ops = count_ops(tier)
    tier.drop(DATABASE)
    return {"n": n, "median": median, "ops": ops}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="processes per variant and round, embedded tier")
    parser.add_argument("--real-n", type=int, default=300,
                        help="the same on the real tier (smaller: SecantusDB's findAndModify, the "
                             "claim, scans the collection)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="--n 200 --real-n 200 --rounds 1")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.real_n, args.rounds = 200, 200, 1
    sizes = {"embedded": args.n, "real": args.real_n}

    broker = redis_url()
    machine.listeners.append(_on_transition)
    results = {}
    with tiers(args.tier) as found:
        print("Processes per second, one lifecycle per process; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, sizes[tier.name], args.rounds, args.concurrency, broker)
        names = [t.name for t in found]
    print()
    print(f"{args.rounds} round(s) interleaved per tier, median rates (processes/s); sizes: "
          + ", ".join(f"{name} {sizes[name]:,} processes per variant and round" for name in names)
          + f"; worker: {args.concurrency} threads in this process; broker: real Redis")
    rows = [[label] + [f"{results[name]['median'][key]:.1f}" for name in names] for key, label in VARIANTS]
    for label, (x, y) in (("ratio (a)/(b)  (goal >= 1.0x)", ("a", "b")),
                          ("ratio (a')/(b) (the tracking alone vs. naive)", ("a2", "b")),
                          ("ratio (a)/(c)  (tracking overhead vs. the floor)", ("a", "c"))):
        rows.append([label] + [f"{results[name]['median'][x] / results[name]['median'][y]:.2f}x"
                               for name in names])
    for key, label in (("a", "proc"), ("b", "naive")):
        rows.append([f"round trips per lifecycle, {label}"]
                    + [f"{results[name]['ops'][key].total} ({results[name]['ops'][key].writes()} writes, "
                       f"{results[name]['ops'][key].reads()} reads)" for name in names])
    print(table(["", *names], rows))
    for name in names:
        for key, label in (("a", "proc"), ("b", "naive")):
            print(f"  {name}, {label}: {results[name]['ops'][key].detail()}")
    print("(embedded: collection method calls; real: commands pymongo sent, seen by a CommandListener)")


if __name__ == "__main__":
    main()
