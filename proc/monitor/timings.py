"""Where time goes: per kind and phase (``proc.machine.phases``), how many processes ended within a
window and the p50, p95 and max of the seconds they spent in that phase, read from the time
buckets every ending write is counted into (``proc.machine.tally``).

Cost: one ``find`` of the bucket documents of the window (one per kind and minute for a window
up to a day, one per kind and hour beyond): O(kinds x time buckets), whatever the number of
processes. Before reading, this process's own counts not yet flushed are flushed. The filter
is the width and the time range only, the prefix of ``tally.INDEX``, and the kinds are picked
here: a filter on a field outside the index makes SecantusDB scan every bucket document
(the hour buckets of the whole retention included). The all-time documents are read by
``_id``.

Invariants:

- Every registered kind (or the one asked for) and every phase is in the answer; a phase
  no process went through has ``n`` 0 and null ``p50``, ``p95``, ``max``.
- The window is rounded to whole buckets: its start goes back to the start of the bucket
  (minute, or hour beyond a day) that holds ``now - window``, so it covers at most one bucket
  width more than asked (``since``), up to ``tally.RETENTION``.
- ``n``, ``max``, ``ended`` and ``failures`` are exact counts of the attempts counted in the
  window's buckets; ``p50`` and ``p95`` are the nearest-rank quantiles within a relative error
  of ``proc.machine.buckets.ERROR`` (4.69%). Attempts ended by a process killed before its
  next flush (``PROC_BUCKET_FLUSH``) are missing from all of them.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .. import registry
from ..machine import buckets, tally
from ..machine.phases import PHASES
from ..status import ProcessStatus as S
from ..timeutil import utcnow

QUANTILES = (0.5, 0.95)


def empty() -> dict:
    """The statistics of a phase no process went through."""
    return {"n": 0, "p50": None, "p95": None, "max": None}


def width_for(window_seconds: float) -> int:
    """The width (s) of the buckets a window reads: minutes up to a day, hours beyond."""
    return 60 if window_seconds <= tally.MINUTES_UP_TO else 3600


def since(window_seconds: float, now: datetime) -> datetime:
    """The start of the window as read: that of the bucket holding ``now - window``."""
    return tally.start_of(now - timedelta(seconds=window_seconds), width_for(window_seconds))


def _stats(phase: dict) -> dict:
    counts = {b: n for b, n in (phase.get("c") or {}).items() if n}
    n = sum(counts.values())
    if not n:
        return empty()
    top = phase.get("x")
    return {"n": n, "p50": buckets.quantile(counts, 0.5, top), "p95": buckets.quantile(counts, 0.95, top),
            "max": round(top, 3) if top is not None else None}


def merge(into: dict, doc: dict) -> None:
    """Add the bucket document ``doc`` to ``into`` (its shape: ``e`` and ``p``)."""
    for status, n in (doc.get("e") or {}).items():
        into["e"][status] = into["e"].get(status, 0) + n
    for phase, got in (doc.get("p") or {}).items():
        mine = into["p"].setdefault(phase, {"c": {}, "n": 0, "s": 0.0, "x": None})
        for b, n in (got.get("c") or {}).items():
            mine["c"][b] = mine["c"].get(b, 0) + n
        mine["n"] += got.get("n", 0)
        mine["s"] += got.get("s", 0.0)
        if got.get("x") is not None:
            mine["x"] = got["x"] if mine["x"] is None else max(mine["x"], got["x"])


def blank() -> dict:
    return {"e": {}, "p": {}}


def kinds_of(kind: tuple[type, str | None] | None) -> list[str]:
    """The names of the registered kinds, or of the one ``kind`` (class, method or None) names."""
    return sorted(k.name for k in registry.kinds()
                  if kind is None or (k.cls is kind[0] and kind[1] in (None, k.method)))


def summary(window_seconds: float, kind: tuple[type, str | None] | None = None, **kw) -> dict[str, dict]:
    """``{"collection.method": {phase: {n, p50, p95, max}}}`` over the processes that ended in
    the last ``window_seconds``; ``kind`` narrows it to ``(class, method or None)``."""
    return report(window_seconds, kind, **kw)[0]


def report(window_seconds: float, kind: tuple[type, str | None] | None = None, *,
           now: datetime | None = None, query_log: list | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """``summary``, and per kind ``{ended, failures}``: how many processes ended in the window
    and how many of them as FAILURE."""
    tally.flush()
    names = kinds_of(kind)
    # the index's fields only (the module's docstring): the kinds are picked below
    query = {"w": width_for(window_seconds), "t": {"$gte": since(window_seconds, now or utcnow())}}
    if query_log is not None:
        query_log.append((tally.COLLECTION, query))
    found = {name: blank() for name in names}
    for doc in tally.collection().find(query, {"_id": 0, "k": 1, "e": 1, "p": 1}):
        if doc.get("k") in found:
            merge(found[doc["k"]], doc)
    answer, ended = {}, {}
    for name in names:
        got = found[name]
        answer[name] = {p: _stats(got["p"].get(p) or {}) for p in PHASES}
        ended[name] = {"ended": sum(got["e"].values()), "failures": got["e"].get(S.FAILURE.value, 0)}
    return answer, ended


def totals(kind: tuple[type, str | None] | None = None) -> dict[str, dict]:
    """Per kind, the all-time counts (``e`` and ``p`` as in a bucket document) since the tally
    began: one ``find`` of one document per kind. They only ever grow."""
    tally.flush()
    names = kinds_of(kind)
    found = {name: blank() for name in names}
    ids = [f"{name}|{tally.TOTAL}" for name in names]  # by _id: an index on every server
    for doc in tally.collection().find({"_id": {"$in": ids}}, {"_id": 0, "k": 1, "e": 1, "p": 1}):
        if doc.get("k") in found:
            merge(found[doc["k"]], doc)
    return found
