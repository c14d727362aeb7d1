"""``/healthz`` (database and broker reachable) and ``/metrics`` (Prometheus).

Every metric is read from the database at scrape time, so it is right whichever process
(worker, monitor, admin action) made the transitions.
"""
from __future__ import annotations

from collections import Counter

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from proc import messaging, config, db, stuck
from proc.redact import redact_url
from proc.timeutil import age_seconds, utcnow

from . import broker, overview, phase_metrics

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(c["ok"] for c in checks.values())
    response = jsonify({"status": "ok" if healthy else "unavailable", **checks})
    response.status_code = 200 if healthy else 503
    return response


def _check_database() -> dict:
    url = redact_url(config.get().mongodb_uri)
    try:
        db.ping()
    except Exception as exc:  # ping already names the URI with the password hidden
        return {"ok": False, "url": url, "error": redact_url(str(exc))}
    return {"ok": True, "url": url}


def _check_broker() -> dict:
    app = messaging.get_app()
    url = redact_url(app.conf.broker_url)
    try:
        broker.queue_depths(app, [], float(current_app.config["PROC_INSPECT_TIMEOUT"]) * 2)
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not reachable"
        return {"ok": False, "url": url, "error": redact_url(f"{type(exc).__name__}: {exc}")}
    return {"ok": True, "url": url}


class StatusCollector:
    """Builds the proc_* metrics from the database on each scrape."""

    def collect(self):
        now = utcnow()
        counts = overview.aggregate_counts()
        processes = GaugeMetricFamily("proc_processes", "Processes per status and kind (collection, method).",
                                      labels=["collection", "method", "status"])
        for row in counts.kinds:
            for status, n in row.counts.items():
                processes.add_metric([row.collection, row.method or "", status], n)
        yield processes
        oldest = GaugeMetricFamily("proc_oldest_age_seconds",
                                   "Age of the oldest process in each active status (0 when there is none).",
                                   labels=["status"])
        for status in overview.ACTIVE:
            oldest.add_metric([status], max(age_seconds(counts.oldest.get(status), now) or 0.0, 0.0))
        yield oldest
        limit = GaugeMetricFamily("proc_concurrency_limit", "Concurrency limit of a limited kind.", labels=["kind"])
        used = GaugeMetricFamily("proc_concurrency_in_use", "Slots of a limited kind in use.", labels=["kind"])
        for row in counts.kinds:
            if row.limit:
                limit.add_metric([row.name], row.limit)
                used.add_metric([row.name], row.in_use)
        yield limit
        yield used
        attention = GaugeMetricFamily("proc_needs_attention",
                                      "Processes past their kind's thresholds, by kind and reason.",
                                      labels=["kind", "reason"])
        found = Counter((s.kind.name, s.reason) for s in stuck.find(now))
        for (kind, reason), n in sorted(found.items()):
            attention.add_metric([kind, reason], n)
        yield attention
        yield from phase_metrics.timing_metrics(counts, now)
        config_ = current_app.config
        yield from phase_metrics.worker_metrics(float(config_["PROC_INSPECT_TIMEOUT"]),
                                                float(config_["PROC_REFRESH_SECONDS"]))


@bp.get("/metrics")
def metrics():
    registry_ = CollectorRegistry(auto_describe=False)
    registry_.register(StatusCollector())
    return Response(generate_latest(registry_), content_type=CONTENT_TYPE_LATEST)
