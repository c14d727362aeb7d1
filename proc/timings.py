"""Where time goes: per kind and phase (``proc.phases``), how many processes ended within a
window and the p50, p95 and max of the seconds they spent in that phase.

Cost: at most two aggregations per Proc collection, whatever the number of processes:

1. counts: ``$group`` by process method of the ended documents of the window (SUCCESS or
   FAILURE, ``complete_time`` in the window, with ``phases``): how many have each phase and
   its exact maximum;
2. values: ``$group`` with ``$push`` of each phase's values, which are then sorted here.

Invariants:

- Every registered kind (or the one asked for) and every phase is in the answer; a phase
  no process went through has ``n`` 0 and null ``p50``, ``p95``, ``max``.
- ``n`` and ``max`` are always exact. A percentile is the nearest-rank value (the
  ``ceil(q * n)``-th smallest), exact when a kind has at most ``EXACT_LIMIT`` ended processes
  in the window.
- Above that, aggregation 2 keeps only the documents whose ``phases_draw`` (a uniform random
  number written with the phases) is below ``EXACT_LIMIT / n``: a uniform random sample of
  about ``EXACT_LIMIT`` processes, so the values read stay bounded. By the
  Dvoretzky-Kiefer-Wolfowitz inequality, the true rank of a percentile read from a sample
  of m values is within ``sqrt(ln(2 / 0.01) / (2 m))`` of the asked one with probability
  99%: for m = 100,000, 0.52 percentage points (the reported p95 lies between the true
  p94.48 and p95.52).
- Only MongoDB 4.x-era operators (``$match``, ``$group``, ``$sum``, ``$max``, ``$push``,
  ``$cond``, ``$ifNull``): no ``$percentile`` (7.0), so it runs on MongoDB 6.0,
  mongomock-ng and SecantusDB alike.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from . import registry
from .phases import PHASES
from .status import COMPLETED, ProcessStatus as S
from .timeutil import utcnow

#: Above this many ended processes of one kind in the window, percentiles are sampled.
EXACT_LIMIT = 100_000
QUANTILES = (0.5, 0.95)


def empty() -> dict:
    """The statistics of a phase no process went through."""
    return {"n": 0, "p50": None, "p95": None, "max": None}


def quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of the sorted ``ordered``."""
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def _match(since: datetime, methods: list[str]) -> dict:
    return {"process_status": {"$in": sorted(s.value for s in COMPLETED)},
            "complete_time": {"$gte": since}, "current_process": {"$in": methods},
            "phases": {"$exists": True}}


def _present(phase: str) -> dict:
    return {"$cond": [{"$eq": [{"$ifNull": [f"$phases.{phase}", None]}, None]}, 0, 1]}


def counts_pipeline(since: datetime, methods: list[str]) -> list[dict]:
    group = {"_id": "$current_process", "n": {"$sum": 1},
             "failures": {"$sum": {"$cond": [{"$eq": ["$process_status", S.FAILURE.value]}, 1, 0]}}}
    for p in PHASES:
        group[f"n_{p}"] = {"$sum": _present(p)}
        group[f"max_{p}"] = {"$max": f"$phases.{p}"}
    return [{"$match": _match(since, methods)}, {"$group": group}]


def values_pipeline(since: datetime, methods: list[str], rates: dict[str, float]) -> list[dict]:
    """``rates``: the kinds to sample (method -> the share of documents kept)."""
    match = _match(since, [m for m in methods if m not in rates])
    if rates:
        match = {"$or": [match] + [{**_match(since, [m]), "phases_draw": {"$lt": rate}}
                                   for m, rate in sorted(rates.items())]}
    group = {"_id": "$current_process", **{p: {"$push": f"$phases.{p}"} for p in PHASES}}
    return [{"$match": match}, {"$group": group}]


def _collection_stats(cls, methods: list[str], since: datetime, exact_limit: int,
                      query_log: list | None) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per method of ``cls``: per phase ``{n, p50, p95, max}``, and ``{ended, failures}``
    (2 aggregations at most)."""
    coll = cls._get_collection()
    pipeline = counts_pipeline(since, methods)
    if query_log is not None:
        query_log.append((coll.name, pipeline))
    counted = {g["_id"]: g for g in coll.aggregate(pipeline)}
    result = {m: {p: empty() for p in PHASES} for m in methods}
    totals = {m: {"ended": counted[m]["n"] if m in counted else 0,
                  "failures": counted[m]["failures"] if m in counted else 0} for m in methods}
    if not counted:
        return result, totals
    rates = {m: exact_limit / g["n"] for m, g in counted.items() if g["n"] > exact_limit}
    pipeline = values_pipeline(since, sorted(counted), rates)
    if query_log is not None:
        query_log.append((coll.name, pipeline))
    for group in coll.aggregate(pipeline):
        method, count = group["_id"], counted[group["_id"]]
        for p in PHASES:
            ordered = sorted(v for v in group.get(p) or () if v is not None)
            if count[f"n_{p}"]:
                result[method][p] = {"n": count[f"n_{p}"], "p50": quantile(ordered, 0.5),
                                     "p95": quantile(ordered, 0.95), "max": count[f"max_{p}"]}
    return result, totals


def summary(window_seconds: float, kind: tuple[type, str | None] | None = None, **kw) -> dict[str, dict]:
    """``{"collection.method": {phase: {n, p50, p95, max}}}`` over the processes that ended in
    the last ``window_seconds``; ``kind`` narrows it to ``(class, method or None)``."""
    return report(window_seconds, kind, **kw)[0]


def report(window_seconds: float, kind: tuple[type, str | None] | None = None, *,
           now: datetime | None = None, exact_limit: int = EXACT_LIMIT,
           query_log: list | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """``summary``, and per kind ``{ended, failures}``: how many processes ended in the window
    (with phases) and how many of them as FAILURE."""
    since = (now or utcnow()) - timedelta(seconds=window_seconds)
    by_class: dict[type, list[str]] = {}
    for k in registry.kinds():
        if kind is None or (k.cls is kind[0] and kind[1] in (None, k.method)):
            by_class.setdefault(k.cls, []).append(k.method)
    answer, ended = {}, {}
    for cls, methods in by_class.items():
        stats, totals = _collection_stats(cls, sorted(methods), since, exact_limit, query_log)
        for method in sorted(methods):
            name = f"{cls._get_collection_name()}.{method}"
            answer[name], ended[name] = stats[method], totals[method]
    return dict(sorted(answer.items())), dict(sorted(ended.items()))
