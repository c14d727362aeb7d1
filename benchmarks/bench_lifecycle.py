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

    python -m benchmarks.bench_lifecycle [--n 1000] [--rounds 3] [--concurrency 4]
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from celery import shared_task
from mongoengine import StringField

from benchmarks.common import OpCounter, make_app, redis_url, worker
from proc import Proc, config, db, machine, process

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


def run_a(n):
    docs = _fresh(BenchTracked, n)
    return _timed(n, lambda: [d.noop() for d in docs])


def run_a2(n):
    docs = _fresh(BenchTrackedSweepOnly, n)
    return _timed(n, lambda: [d.noop() for d in docs])


def run_b(n):
    docs = _fresh(BenchNaive, n)

    def submit():
        for d in docs:
            d.status = "PENDING"
            d.save()
            naive_task.apply_async(args=[str(d.pk)])

    return _timed(n, submit)


def run_c(n):
    docs = _fresh(BenchNaive, n)
    return _timed(n, lambda: [bare_task.apply_async(args=[str(d.pk)]) for d in docs])


def count_ops(app):
    """Database operations of one lifecycle of (a) and of (b), the document already saved."""

    results = {}
    doc = _fresh(BenchTracked, 1)[0]
    with OpCounter() as ops:
        doc.noop()
        doc_done = threading.Event()
        machine.listeners.append(lambda t: t.target.value == "SUCCESS" and doc_done.set())
        doc_done.wait(30)
    results["a"] = ops
    naive = _fresh(BenchNaive, 1)[0]
    _done.update(n=0, target=1)
    _all_done.clear()
    with OpCounter() as ops:
        naive.status = "PENDING"
        naive.save()
        naive_task.apply_async(args=[str(naive.pk)])
        _all_done.wait(30)
    results["b"] = ops
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    config.configure(mongodb_uri="mongomock://localhost/proc_bench")
    db.connect()
    app = make_app(redis_url())
    machine.listeners.append(_on_transition)
    rates = {"a": [], "a2": [], "b": [], "c": []}
    with worker(app, args.concurrency):
        run_a(50), run_a2(50), run_b(50), run_c(50)  # warm up connections and code paths
        for r in range(args.rounds):
            for key, fn in (("a", run_a), ("a2", run_a2), ("b", run_b), ("c", run_c)):
                rates[key].append(fn(args.n))
            print(f"round {r + 1}: (a) {rates['a'][-1]:7.1f}/s  (a') {rates['a2'][-1]:7.1f}/s  "
                  f"(b) {rates['b'][-1]:7.1f}/s  (c) {rates['c'][-1]:7.1f}/s")
        ops = count_ops(app)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{args.n} processes per variant, {args.rounds} rounds interleaved, median rates, "
          f"worker: {args.concurrency} threads, broker: real Redis, database: embedded")
    print(f"  (a) proc tracked lifecycle   {med['a']:8.1f} processes/s")
    print(f"  (a') proc, sweep-only monitor {med['a2']:8.1f} processes/s")
    print(f"  (b) naive save() tracking    {med['b']:8.1f} processes/s")
    print(f"  (c) bare Celery, no tracking {med['c']:8.1f} processes/s")
    print(f"  ratio (a)/(b) = {med['a'] / med['b']:.2f}x   (goal >= 1.0x)")
    print(f"  ratio (a')/(b) = {med['a2'] / med['b']:.2f}x  (the tracking alone vs. naive tracking)")
    print(f"  ratio (a)/(c) = {med['a'] / med['c']:.2f}x   (tracking overhead vs. the floor)")
    for key, label in (("a", "proc"), ("b", "naive")):
        o = ops[key]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(o.counts.items()))
        print(f"  DB operations per lifecycle, {label}: {o.total} ({o.writes()} writes, "
              f"{o.reads()} reads): {detail}")


if __name__ == "__main__":
    main()
