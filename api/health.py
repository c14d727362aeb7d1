"""``/healthz`` (database and broker reachable) and ``/metrics`` (Prometheus).

``/healthz`` answers ``{"status": "ok"|"unavailable", "database": {"ok": bool}, "broker":
{"ok": bool}}`` to anyone; a request carrying ``PROC_API_TOKEN`` also gets each one's URL
(password and unknown query parameters hidden) and error (``api.auth`` decides).

Every metric is read from the database, so it is right whichever process (worker, monitor,
admin action) made the transitions: at most once per ``PROC_METRICS_SECONDS`` per web
process, the collection shared by the scrapes of that interval (``api.shared``), and at a
cost that follows the live work, never the history (``api.overview``).
"""
from __future__ import annotations

from collections import Counter

from flask import Blueprint, Response, current_app, g, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from proc import config
from proc.monitor import hosts as worker_hosts
from proc.monitor import stuck
from proc.run import messaging
from proc.store import db
from proc.redact import redact_text, redact_url
from proc.timeutil import age_seconds, utcnow

from . import broker, overview, phase_metrics, shared

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(c["ok"] for c in checks.values())
    if not g.get("health_details"):
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    response = jsonify({"status": "ok" if healthy else "unavailable", **checks})
    response.status_code = 200 if healthy else 503
    return response


def _check_database() -> dict:
    url = redact_url(config.get().mongodb_uri)
    try:
        db.ping()
    except Exception as exc:  # ping already names the URI with the password hidden
        return {"ok": False, "url": url, "error": redact_text(str(exc))}
    return {"ok": True, "url": url}


def _check_broker() -> dict:
    app = messaging.get_app()
    url = redact_url(app.conf.broker_url)
    try:
        broker.queue_depths(app, [], float(current_app.config["PROC_INSPECT_TIMEOUT"]) * 2)
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not reachable"
        return {"ok": False, "url": url, "error": redact_text(f"{type(exc).__name__}: {exc}")}
    return {"ok": True, "url": url}


class StatusCollector:
    """Builds the proc_* metrics from the database on each scrape."""

    def collect(self):
        now = utcnow()
        counts = overview.aggregate_counts()
        processes = GaugeMetricFamily("proc_processes", "Processes per status and kind (collection, method): "
                                      "active statuses exact, READY up to 10000 per collection, "
                                      "SUCCESS and FAILURE ended in the last hour.",
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
        found = Counter((s.kind.name, s.reason) for s in stuck.find(now, unreadable=counts.unreadable))
        for (kind, reason), n in sorted(found.items()):
            attention.add_metric([kind, reason], n)
        yield attention
        yield phase_metrics.unreadable_metric(counts.unreadable)
        yield from phase_metrics.timing_metrics(counts, now)
        yield from host_metrics(now)
        config_ = current_app.config
        yield from phase_metrics.worker_metrics(float(config_["PROC_INSPECT_TIMEOUT"]),
                                                float(config_["PROC_REFRESH_SECONDS"]))


def host_metrics(now):
    """Per worker (``proc.monitor.hosts``): seen, answering, RUNNING, oldest heartbeat, clock offset."""
    families = {
        "seen": GaugeMetricFamily("proc_host_last_seen_age_seconds", "Seconds since the worker last recorded "
                                  "itself (proc_workers).", labels=["worker"]),
        "answering": GaugeMetricFamily("proc_host_answering", "1 if the worker recorded itself within "
                                       "three heartbeat intervals, else 0.", labels=["worker"]),
        "busy": GaugeMetricFamily("proc_host_running", "RUNNING processes of the worker.", labels=["worker"]),
        "beat": GaugeMetricFamily("proc_host_oldest_heartbeat_age_seconds", "Age of the oldest heartbeat of "
                                  "the worker's RUNNING processes.", labels=["worker"]),
        "clock": GaugeMetricFamily("proc_host_clock_offset_seconds", "The database server's clock minus the "
                                   "worker host's, as the worker measured it.", labels=["worker"]),
        "concurrency": GaugeMetricFamily("proc_host_concurrency", "Pool size of the worker.", labels=["worker"]),
    }
    for h in worker_hosts.hosts(now):
        name = [h["name"]]
        families["answering"].add_metric(name, 1.0 if h["answering"] else 0.0)
        families["busy"].add_metric(name, h["busy"])
        for key, value in (("seen", h["last_seen_age_seconds"]), ("beat", h["oldest_heartbeat_age_seconds"]),
                           ("clock", h["clock_offset_seconds"]), ("concurrency", h["concurrency"])):
            if value is not None:
                families[key].add_metric(name, max(float(value), 0.0) if key != "clock" else float(value))
    yield from families.values()


class SharedCollector:
    """``StatusCollector``'s metric families, collected once per ``PROC_METRICS_SECONDS`` by this
    app and handed to every scrape of the interval."""

    def collect(self):
        ttl = float(current_app.config["PROC_METRICS_SECONDS"])
        return shared.once_per("metrics", ttl, lambda: list(StatusCollector().collect()))


@bp.get("/metrics")
def metrics():
    registry_ = CollectorRegistry(auto_describe=False)
    registry_.register(SharedCollector())
    return Response(generate_latest(registry_), content_type=CONTENT_TYPE_LATEST)
