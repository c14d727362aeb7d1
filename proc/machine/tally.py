"""Counting ended attempts into time buckets: in memory in each process, flushed by a thread of
its own with ``$inc`` upserts, so the write that ends an attempt gains no round trip.

``machine.transition`` and ``machine.many`` call ``ended(...)`` for each ending write (SUCCESS
or FAILURE) that landed, whoever sent it (worker, monitor, API, CLI, bulk, cancel). The counts
go to the collection ``COLLECTION``, one document per kind and time bucket:
``{_id: "<collection.method>|<width>|<start epoch>", k, w, t, e: {STATUS: n},
p: {phase: {c: {bucket: n}, n, s, x}}}`` (``proc.machine.buckets`` names the buckets ``c``;
``n``, ``s``, ``x``: how many, their sum, their largest), with a width of a minute (kept
``KEPT[60]``) and of an hour (kept ``KEPT[3600]``), and one all-time document per kind
(``w`` 0, never deleted, only ever incremented: what ``/metrics`` exposes as counters).

Invariants:

- The ending write never waits for the tally: ``ended`` only adds to a dictionary. The flush
  thread sends what was added every ``PROC_BUCKET_FLUSH`` seconds in one unordered
  ``bulk_write`` (one upsert per kind and bucket, plus the ``meta`` document's ``$min`` of the
  earliest end counted: the backfill's cut-off); a process also flushes at exit and a Celery
  pool process when it shuts down. A process killed outright loses what it counted since its
  last flush: at most ``PROC_BUCKET_FLUSH`` seconds of its own endings.
- A flush the database did not take is put back and sent with the next one (should the
  database have taken it and only the reply been lost, it is counted twice).
- A forked child starts with nothing counted (its parent flushes its own counts).
- Expired time buckets are deleted by the flush, at most once per ``PRUNE_EVERY`` per process.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Mapping

from pymongo import UpdateOne

from .. import config
from ..timeutil import utcnow
from ..store import db
from . import buckets

log = logging.getLogger(__name__)

COLLECTION = "proc_phase_buckets"
#: Bucket width (s) -> how long its buckets are kept (s).
KEPT = {60: 26 * 3600, 3600: 31 * 24 * 3600}
#: The longest window read from minute buckets; longer ones read hour buckets.
MINUTES_UP_TO = 24 * 3600
#: The longest window the buckets answer: the retention.
RETENTION = 30 * 24 * 3600
TOTAL = 0
META = "meta"
#: The index that serves a window's read and the pruning (created by datafix 0003).
INDEX = [("w", 1), ("t", 1)]
PRUNE_EVERY = 3600.0

_lock = threading.Lock()
_sending = threading.Lock()  # one flush at a time: a flush returns once what was counted before it is written
_wake = threading.Event()
_state: dict = {"pid": None, "pending": {}, "docs": {}, "first": None, "thread": None, "pruned": 0.0}


def start_of(when: datetime, width: int) -> datetime:
    """The start of the bucket of ``width`` seconds that holds ``when`` (UTC, naive as stored)."""
    epoch = int(when.replace(tzinfo=timezone.utc).timestamp()) if when.tzinfo is None else int(when.timestamp())
    return datetime.fromtimestamp(epoch - epoch % width, timezone.utc).replace(tzinfo=None)


def _mine() -> dict:
    """This process's state (a forked child starts afresh). Called with ``_lock`` held."""
    if _state["pid"] != os.getpid():
        _state.update(pid=os.getpid(), pending={}, docs={}, first=None, thread=None)
    return _state


def _doc(pending: dict, kind: str, width: int, epoch: int) -> dict:
    """The increments of ``kind``'s bucket of ``width`` that holds ``epoch`` (``TOTAL``: all time)."""
    start = epoch - epoch % width if width else None
    key = f"{kind}|{width}|{start}" if width else f"{kind}|{TOTAL}"
    doc = pending.get(key)
    if doc is None:
        when = datetime.fromtimestamp(start, timezone.utc).replace(tzinfo=None) if width else None
        doc = pending[key] = {"on": {"k": kind, "w": width, "t": when}, "inc": defaultdict(int), "max": {}}
    return doc


class _Keys(dict):
    """value -> ``buckets.key(value)``, remembered: a lookup that hits costs no call (phases
    are written to the millisecond, so values repeat). Emptied when it grows past ``size``."""

    size = 100_000

    def __missing__(self, value):
        if len(self) >= self.size:
            self.clear()
        found = self[value] = buckets.key(value)
        return found


_keys = _Keys()
_NUMBERS = (int, float)
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


def _counted(phases: Mapping) -> list[tuple]:
    """Per phase with a number: (its bucket's path, its count's, its sum's, its max's, value)."""
    return [(f"p.{phase}.c.{_keys[value]}", f"p.{phase}.n", f"p.{phase}.s", f"p.{phase}.x", value)
            for phase, value in phases.items() if type(value) in _NUMBERS]


def _count_into(docs, status: str, counted: list) -> None:
    """Add one ended attempt (``status``, ``_counted`` phases) to each of ``docs``."""
    path = f"e.{status}"
    for doc in docs:
        inc, top = doc["inc"], doc["max"]
        inc[path] += 1
        for bucket, n, total_seconds, largest, value in counted:
            inc[bucket] += 1
            inc[n] += 1
            inc[total_seconds] += value
            if largest not in top or value > top[largest]:
                top[largest] = value


def _epoch_of(end: datetime) -> int:
    return (end - _EPOCH) // _SECOND if end.tzinfo is None else int(end.timestamp())


def add(pending: dict, kind: str, status: str, phases: Mapping, end: datetime, *,
        widths=tuple(KEPT), total: bool = True) -> None:
    """Count one ended attempt into ``pending`` (bucket id -> increments): its minute, its hour
    (``widths``) and its kind's all-time document (``total``). Each value's bucket is found
    once, whatever the number of documents it goes to."""
    epoch = _epoch_of(end)
    _count_into([_doc(pending, kind, width, epoch) for width in ((*widths, TOTAL) if total else widths)],
                status, _counted(phases))


def ended(collection: str, method: str | None, status: str, phases: Mapping | None, end: datetime) -> None:
    """Count an attempt of ``collection.method`` that ended as ``status`` at ``end`` with
    ``phases`` (empty when unknown: counted as ended, in no phase). No I/O.

    On the path of every ending write, so it is ``add`` with the fewest calls: the bucket
    documents of a kind's current minute are looked up once per minute (``docs``, emptied
    with ``pending``), not once per attempt and width."""
    if not method:
        return  # not a process method's attempt: no kind to count it for
    kind = f"{collection}.{method}"
    epoch = (end - _EPOCH) // _SECOND if end.tzinfo is None else int(end.timestamp())
    counted = _counted(phases) if phases else []
    with _lock:
        state = _state  # a forked child's was reset at the fork (_after_fork_in_child)
        try:
            docs = state["docs"][kind, epoch - epoch % 60]
        except KeyError:
            docs = state["docs"][kind, epoch - epoch % 60] = [
                _doc(state["pending"], kind, width, epoch) for width in (*KEPT, TOTAL)]
        _count_into(docs, status, counted)
        first = state["first"]
        if first is None or end < first:
            state["first"] = end
        if state["thread"] is None:
            state["pid"] = os.getpid()
            state["thread"] = threading.Thread(target=_run, name="proc-tally", daemon=True)
            state["thread"].start()


def operations(pending: Mapping, first: datetime | None = None) -> list[UpdateOne]:
    """The upserts that add ``pending`` to the bucket documents (and ``first`` to ``meta``)."""
    ops = [UpdateOne({"_id": key}, {"$setOnInsert": doc["on"], "$inc": dict(doc["inc"]),
                                    **({"$max": doc["max"]} if doc["max"] else {})}, upsert=True)
           for key, doc in pending.items()]
    if first is not None:
        ops.append(UpdateOne({"_id": META}, {"$min": {"first": first}}, upsert=True))
    return ops


def collection():
    return db.collection(COLLECTION)


def flush() -> int:
    """Send this process's counts now (after any flush under way); returns how many bucket
    documents were written. A read that follows sees every count this process made before."""
    with _sending:
        return _send()


def _send() -> int:
    with _lock:
        state = _mine()
        pending, first = state["pending"], state["first"]
        state["pending"], state["docs"], state["first"] = {}, {}, None
    if not pending:
        return 0
    try:
        collection().bulk_write(operations(pending, first), ordered=False)
    except Exception:
        with _lock:  # kept for the next flush
            state = _mine()
            for key, doc in pending.items():
                mine = state["pending"].setdefault(key, {"on": doc["on"], "inc": defaultdict(int), "max": {}})
                for path, n in doc["inc"].items():
                    mine["inc"][path] += n
                for path, x in doc["max"].items():
                    mine["max"][path] = max(mine["max"].get(path, x), x)
            state["first"] = first if state["first"] is None else min(state["first"], first)
        raise
    _prune()
    return len(pending)


def _prune() -> None:
    if time.monotonic() - _state["pruned"] < PRUNE_EVERY and _state["pruned"]:
        return
    _state["pruned"] = time.monotonic()
    now = utcnow()
    for width, kept in KEPT.items():
        collection().delete_many({"w": width, "t": {"$lt": now - timedelta(seconds=kept)}})


def _run() -> None:
    me = os.getpid()
    while _state["pid"] == me:
        _wake.wait(config.get().bucket_flush)
        _wake.clear()
        try:
            flush()
        except Exception as exc:  # the database away: the counts wait for the next flush
            log.warning("the counts of ended processes were not flushed (%s); kept for the next flush",
                        type(exc).__name__)


def _after_fork_in_child() -> None:
    """A forked child gets fresh locks (a parent's flush may have held them) and no counts."""
    global _lock, _sending, _wake
    _lock, _sending, _wake = threading.Lock(), threading.Lock(), threading.Event()
    _state.update(pid=os.getpid(), pending={}, docs={}, first=None, thread=None)


os.register_at_fork(after_in_child=_after_fork_in_child)


def discard() -> None:
    """Forget what this process counted and not yet flushed, once a flush under way has ended
    (tests: a fresh start, before connecting to the next test's database)."""
    with _sending, _lock:
        state = _mine()
        state["pending"], state["docs"], state["first"] = {}, {}, None


def at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # the database away at exit: say what was lost, without a traceback
        log.warning("the counts of processes that ended in this process since its last flush were "
                    "lost at exit: the database did not take them (%s)", type(exc).__name__)


atexit.register(at_exit)
