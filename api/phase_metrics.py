"""The ``/metrics`` of where time goes and of what the page says about workers and broker.

Added to the scrape by ``api.health.StatusCollector`` (which hands over the counts it read,
so the oldest age per kind costs no further query). All read from the database at scrape
time, labelled ``collection`` and ``method`` as ``proc_processes`` is:

- ``proc_phase_seconds{phase}`` (a histogram: ``_bucket{le}``, ``_sum``, ``_count``) and
  ``proc_ended_total{status}`` (a counter): from the all-time documents of the tally
  (``proc.machine.tally``, ``proc.monitor.timings.totals``: one find, one document per kind),
  which only ever grow, so they are counters across web-process restarts. The ``le`` bounds
  are ``proc.machine.buckets.COARSE`` (21 of them, plus +Inf): bounds of the fine buckets,
  so each cumulative count is exact;
- ``proc_queue_timeout_seconds``; ``proc_kind_oldest_age_seconds{status}``: the oldest
  process of the kind in each active status (0 when none);
- ``proc_unreadable_documents``: documents the scrape skipped because a field has the wrong
  type (``proc.store.reader``); the page and ``/api/status`` name them;
- ``proc_workers_alive``, ``proc_broker_up``, ``proc_queue_messages{queue}`` and (RabbitMQ)
  ``proc_queue_consumers{queue}``: from the page's own broker look (``api.broker.look``: queue
  depths and consumers by a declare, and Celery inspect), cached for the page's refresh
  interval (per app) so scrapes do not multiply inspect broadcasts.
"""
from __future__ import annotations

import threading
import time

from flask import current_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from proc import registry
from proc.machine import buckets
from proc.monitor import timings
from proc.status import ProcessStatus as S
from proc.names import DEFAULT_QUEUE
from proc.machine.phases import PHASES
from proc.timeutil import age_seconds

from . import broker
from .overview import ACTIVE

KIND = ["collection", "method"]
_lock = threading.Lock()


def cached_look(timeout: float, ttl: float) -> broker.BrokerView:
    """``broker.look`` of every kind's queue, reused for ``ttl`` seconds by this app."""
    queues = tuple(sorted({k.settings.queue for k in registry.kinds()} or {DEFAULT_QUEUE}))
    with _lock:
        cache = current_app.extensions.setdefault("proc_broker_looks", {})
        hit = cache.get(queues)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
    view = broker.look(queues, timeout)
    with _lock:
        cache[queues] = (time.monotonic(), view)
    return view


def _le(bound: float) -> str:
    """``le`` as Prometheus clients write it: ``0.5``, ``1.0``, ``1000.0``."""
    return repr(float(bound))


def _labels(name: str) -> list[str]:
    collection, _, method = name.partition(".")
    return [collection, method]


def timing_metrics(counts, now):
    """The phase histograms, the ended counters, the timeout and per-kind oldest gauges."""
    totals = timings.totals()
    histogram = HistogramMetricFamily(
        "proc_phase_seconds", "Seconds per phase (held, queued, run, waiting) of the attempts that ended, "
        "since the tally began (cumulative: use rate() or increase()).", labels=KIND + ["phase"])
    ended = CounterMetricFamily("proc_ended", "Attempts that ended, per final status (SUCCESS or FAILURE), "
                                "since the tally began.", labels=KIND + ["status"])
    for name, got in totals.items():
        for phase in PHASES:
            mine = got["p"].get(phase) or {}
            counts_by = {b: n for b, n in (mine.get("c") or {}).items() if n}
            le = [(_le(bound), float(n)) for bound, n in buckets.cumulative(counts_by)]
            histogram.add_metric(_labels(name) + [phase], le + [("+Inf", float(sum(counts_by.values())))],
                                 float(mine.get("s") or 0.0))
        for status in (S.SUCCESS.value, S.FAILURE.value):
            ended.add_metric(_labels(name) + [status], float(got["e"].get(status, 0)))
    yield histogram
    yield ended
    timeout = GaugeMetricFamily("proc_queue_timeout_seconds",
                                "Seconds a process of the kind may stay PENDING or DISPATCHED.", labels=KIND)
    for kind in registry.kinds():
        timeout.add_metric([kind.collection, kind.method], kind.settings.queue_timeout)
    yield timeout
    oldest = GaugeMetricFamily("proc_kind_oldest_age_seconds",
                               "Age of the kind's oldest process in each active status (0 when none).",
                               labels=KIND + ["status"])
    for row in counts.kinds:
        for status in ACTIVE:
            oldest.add_metric([row.collection, row.method or "", status],
                              max(age_seconds(row.oldest.get(status), now) or 0.0, 0.0))
    yield oldest


def worker_metrics(timeout: float, ttl: float):
    view = cached_look(timeout, ttl)
    alive = GaugeMetricFamily("proc_workers_alive",
                              "Workers that answered the Celery inspect broadcast (as on the page).")
    alive.add_metric([], len(view.workers or []))
    yield alive
    up = GaugeMetricFamily("proc_broker_up", "1 when the broker answered, else 0.")
    up.add_metric([], 1 if view.reachable else 0)
    yield up
    if not view.reachable:
        return
    messages = GaugeMetricFamily("proc_queue_messages", "Messages waiting in each queue of proc's kinds "
                                 "(as the broker counts them).", labels=["queue"])
    consumers = GaugeMetricFamily("proc_queue_consumers", "Consumers of each queue as the broker counts "
                                  "them (RabbitMQ only: Redis keeps no count).", labels=["queue"])
    for queue, depth in sorted(view.depths.items()):
        if depth is not None:
            messages.add_metric([queue], depth)
        if view.broker_consumers.get(queue) is not None:
            consumers.add_metric([queue], view.broker_consumers[queue])
    yield messages
    yield consumers


def unreadable_metric(unreadable) -> GaugeMetricFamily:
    """``proc_unreadable_documents``: how many documents the scrape could not read (0 when none)."""
    metric = GaugeMetricFamily("proc_unreadable_documents",
                               "Documents skipped because a field has the wrong type (see /api/status).")
    metric.add_metric([], unreadable.count)
    return metric
