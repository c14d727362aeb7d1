"""The ``/metrics`` of where time goes and of what the page says about workers and broker.

Added to the scrape by ``api.health.StatusCollector`` (which hands over the counts it read,
so the oldest age per kind costs no further query). All read from the database at scrape
time, labelled ``collection`` and ``method`` as ``proc_processes`` is:

- ``proc_phase_quantile_seconds{phase, quantile="0.5"|"0.95"}``: over the processes that
  ended in the last hour (``proc.timings``; a phase no process went through has no sample);
- ``proc_phase_ended{phase}``: how many attempts those quantiles cover;
- ``proc_ended_last_hour`` and ``proc_failures_last_hour``: ended attempts, and those ended
  as FAILURE (the failure rate is their ratio);
- ``proc_queue_timeout_seconds``; ``proc_kind_oldest_age_seconds{status}``: the oldest
  process of the kind in each active status (0 when none);
- ``proc_workers_alive`` and ``proc_broker_up``: from the page's own broker look
  (``api.broker.look``: queue depths and Celery inspect), cached for the page's refresh
  interval (per app) so scrapes do not multiply inspect broadcasts.
"""
from __future__ import annotations

import threading
import time

from flask import current_app
from prometheus_client.core import GaugeMetricFamily

from proc import registry, timings
from proc.names import DEFAULT_QUEUE
from proc.phases import PHASES
from proc.timeutil import age_seconds

from . import broker
from .overview import ACTIVE

WINDOW = 3600
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


def _labels(name: str) -> list[str]:
    collection, _, method = name.partition(".")
    return [collection, method]


def timing_metrics(counts, now):
    """The phase, failure, timeout and per-kind oldest gauges."""
    stats, ended = timings.report(WINDOW, now=now)
    quantiles = GaugeMetricFamily("proc_phase_quantile_seconds",
                                  "Seconds per phase (held, queued, run, waiting) of the processes that "
                                  "ended in the last hour, at quantile 0.5 and 0.95.",
                                  labels=KIND + ["phase", "quantile"])
    covered = GaugeMetricFamily("proc_phase_ended",
                                "Ended attempts of the last hour that went through the phase (what "
                                "proc_phase_quantile_seconds covers).", labels=KIND + ["phase"])
    for name, phases in stats.items():
        for phase in PHASES:
            s = phases[phase]
            covered.add_metric(_labels(name) + [phase], s["n"])
            for q, key in (("0.5", "p50"), ("0.95", "p95")):
                if s[key] is not None:
                    quantiles.add_metric(_labels(name) + [phase, q], s[key])
    yield quantiles
    yield covered
    total = GaugeMetricFamily("proc_ended_last_hour", "Attempts that ended (SUCCESS or FAILURE) in the last hour.",
                              labels=KIND)
    failures = GaugeMetricFamily("proc_failures_last_hour", "Attempts that ended as FAILURE in the last hour.",
                                 labels=KIND)
    for name, n in ended.items():
        total.add_metric(_labels(name), n["ended"])
        failures.add_metric(_labels(name), n["failures"])
    yield total
    yield failures
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
