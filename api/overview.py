"""The data of the check-status page and of ``GET /api/status``.

Counts and oldest ages come from ONE aggregation per Proc collection, grouping by
(status, process method) with the count and the oldest ``last_status_change``: the
number of database round trips depends on the number of collections, never on the
number of processes. The needs-attention list is ``proc.stuck.find()`` (indexed
queries returning only candidates), enriched with what the broker and the workers say.
The recently-recovered list is ``proc.monitor.recent_recoveries()``: one query on the
``time`` index of ``proc_recoveries``, bounded by a window and a count.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import url_for

from proc import config, limits, monitor, registry, stuck
from proc.redact import redact_url
from proc.names import DEFAULT_QUEUE
from proc.status import LIFECYCLE, PROCESSING_VALUES, ProcessStatus as S
from proc.timeutil import age_seconds, format_age, utcnow

from . import broker

#: The states a process is under way in: their boxes show the age of the oldest process.
ACTIVE = PROCESSING_VALUES  # the active statuses, in lifecycle order (proc.status)
STATUSES = tuple(s.value for s in LIFECYCLE)

# Reasons the page adds to proc.stuck's, from what the broker and the workers say.
NO_CONSUMER = "no worker consumes the queue"
MESSAGE_LOST = "message lost"
WORKERS_BUSY = "workers busy"

#: What the monitor did, in plain words (the actions ``proc.monitor`` records).
ACTION_WORDS = {
    monitor.FAILED: "marked it FAILURE",
    monitor.RETRIED: "sent it again as a new attempt",
    monitor.RESENT: "handed it to the broker again",
    monitor.JOINED: "ran its lost join",
    monitor.ALERTED: "left it alone and warned (recovery policy: alert)",
}

#: Groups by "STATUS|method" (a flat string key: grouping by a sub-document costs the
#: embedded database twice as much, and a real server nothing more).
GROUP_PIPELINE = [{"$group": {
    "_id": {"$concat": ["$process_status", "|", {"$ifNull": ["$current_process", ""]}]},
    "count": {"$sum": 1},
    "oldest": {"$min": "$last_status_change"},
}}]


def zero_counts() -> dict[str, int]:
    return {s: 0 for s in STATUSES}


@dataclass
class KindRow:
    collection: str
    method: str | None
    kind: registry.Kind | None = None
    counts: dict[str, int] = field(default_factory=zero_counts)
    oldest: dict[str, datetime] = field(default_factory=dict)
    in_use: int = 0

    @property
    def name(self) -> str:
        return f"{self.collection}.{self.method}" if self.method else self.collection

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def limit(self) -> int | None:
        return self.kind.settings.limit if self.kind else None

    def as_dict(self, now: datetime) -> dict:
        settings = self.kind.settings if self.kind else None
        expected = settings.expected_duration if settings else None
        return {
            "kind": self.name,
            "collection": self.collection,
            "method": self.method,
            "registered": self.kind is not None,
            "counts": dict(self.counts),
            "total": self.total,
            "oldest_age_seconds": {s: _age(self.oldest.get(s), now) for s in ACTIVE},
            "limit": self.limit,
            "in_use": self.in_use if self.limit else None,
            "queue": settings.queue if settings else None,
            "thresholds": None if settings is None else {
                "queue_timeout": settings.queue_timeout,
                "expected_duration": None if callable(expected) else float(expected),
                "heartbeat_timeout": settings.heartbeat_timeout,
            },
        }


@dataclass
class Counts:
    totals: dict[str, int]
    oldest: dict[str, datetime]
    kinds: list[KindRow]


def aggregate_counts(query_log: list | None = None) -> Counts:
    """Counts and oldest change per status and per kind: one aggregation per collection."""
    registered = {(k.collection, k.method): k for k in registry.kinds()}
    rows: dict[tuple, KindRow] = {key: KindRow(key[0], key[1], kind) for key, kind in registered.items()}
    totals, oldest = zero_counts(), {}
    for cls in registry.proc_classes():
        collection = cls._get_collection_name()
        if query_log is not None:
            query_log.append((collection, GROUP_PIPELINE))
        for group in cls._get_collection().aggregate(GROUP_PIPELINE):
            status, _, method = (group["_id"] or "").partition("|")
            if status not in totals:
                continue  # not a proc status (a legacy document): the datafix deals with it
            key = (collection, method or None)
            row = rows.get(key) or rows.setdefault(key, KindRow(collection, method or None, registered.get(key)))
            row.counts[status] += group["count"]
            totals[status] += group["count"]
            when = group.get("oldest")
            if isinstance(when, datetime):
                for target in (row.oldest, oldest):
                    if status not in target or when < target[status]:
                        target[status] = when
    in_use = limits.usage()
    for row in rows.values():
        row.in_use = in_use.get(row.name, 0)
    ordered = sorted(rows.values(), key=lambda r: (r.collection, r.method is not None, r.method or ""))
    return Counts(totals, oldest, ordered)


def iso(value) -> str | None:
    """A stored time (naive UTC) as ISO 8601 with milliseconds and a Z."""
    return value.isoformat(timespec="milliseconds") + "Z" if isinstance(value, datetime) else None


def _age(when: datetime | None, now: datetime) -> float | None:
    age = age_seconds(when, now)
    return None if age is None else round(max(age, 0.0), 1)


def attention(view: broker.BrokerView | None, now: datetime, limit: int) -> list[dict]:
    """The processes that need attention, each with the plainest reason the service can tell."""
    found = stuck.find(now, limit=limit)
    found.sort(key=lambda s: (s.age is None, -(s.age or 0)))
    return [explain(s, view) for s in found[:limit]]


def explain(item: stuck.Stuck, view: broker.BrokerView | None) -> dict:
    entry = item.as_dict()
    entry["age"] = format_age(item.age)
    if view is None:
        return entry
    queue = item.kind.settings.queue
    depth = view.depths.get(queue)
    if not view.reachable and item.reason in (stuck.NOT_SENT, stuck.NOT_STARTED):
        entry["reason"] = stuck.BROKER_UNREACHABLE
        entry["detail"] = f"broker unreachable at {view.url} ({view.error})"
    elif item.reason == stuck.NOT_STARTED:
        entry["reason"], entry["detail"] = _explain_dispatched(item, view, queue, depth)
    elif item.reason == stuck.HEARTBEAT_LOST and view.workers is not None:
        host = item.raw.get("worker_hostname") or ""
        if host and not any(host == w["name"] or w["name"].endswith("@" + host) for w in view.workers):
            entry["detail"] += f"; worker {host} is not among the live workers"
    return entry


def _explain_dispatched(item, view, queue: str, depth) -> tuple[str, str]:
    waiting = f"{depth} message{'' if depth == 1 else 's'} waiting"
    if view.workers is None:
        if not depth:
            return MESSAGE_LOST, (f"message lost (queue {queue!r} empty) and no worker answered the "
                                  "inspect broadcast: redispatch it once a worker runs")
        return NO_CONSUMER, (f"no worker consumes queue {queue!r} ({waiting}); no worker answered "
                             "the inspect broadcast: start one, e.g. `procctl worker`")
    consumers = view.consumers(queue)
    if not consumers:
        return NO_CONSUMER, f"no worker consumes queue {queue!r} ({waiting})"
    if not depth:
        return MESSAGE_LOST, (f"message lost (queue {queue!r} empty, {len(consumers)} worker(s) "
                              "consume it): redispatch it")
    busy = sum(w.get("active") or 0 for w in view.workers if w["name"] in consumers)
    return WORKERS_BUSY, (f"{waiting} in queue {queue!r} for {len(consumers)} worker(s), "
                          f"{busy} task(s) running: the workers are busy")


def recoveries(now: datetime, *, hours: float, limit: int) -> list[dict]:
    """What the monitor recovered (or alerted about) in the last ``hours``, newest first."""
    return [recovery(r, now) for r in monitor.recent_recoveries(limit, since=now - timedelta(hours=hours))]


def recovery(record: dict, now: datetime) -> dict:
    """One ``proc_recoveries`` record as the API and the page show it."""
    collection, id_text = record["collection"], str(record["id"])
    action = record.get("action")
    return {
        "time": iso(record.get("time")),
        "age_seconds": _age(record.get("time"), now),
        "collection": collection,
        "id": id_text,
        "kind": record.get("kind"),
        "status_before": record.get("status"),
        "attempt": record.get("attempt"),
        "action": action,
        "action_text": ACTION_WORDS.get(action, action),
        "reason": record.get("reason"),
        "detail": record.get("detail") or "",
        "url": url_for("page.proc_detail", collection=collection, id=id_text),
    }


def hints(counts: Counts, view: broker.BrokerView) -> list[str]:
    """Plain sentences answering "why are processes waiting: the limit, the broker or the workers?"."""
    said = []
    if not view.reachable:
        said.append(f"The broker at {view.url} is unreachable ({view.error}): new processes stay "
                    "PENDING and DISPATCHED ones cannot reach a worker.")
    dispatched_per_queue: dict[str, int] = {}
    for row in counts.kinds:
        pending = row.counts[S.PENDING.value]
        if row.limit and pending and row.in_use >= row.limit:
            said.append(f"{row.name}: {pending} PENDING held by its concurrency limit "
                        f"({row.in_use}/{row.limit} slots in use).")
        elif pending and view.reachable:
            said.append(f"{row.name}: {pending} PENDING not yet handed to the broker.")
        if row.kind is not None and row.counts[S.DISPATCHED.value]:
            queue = row.kind.settings.queue
            dispatched_per_queue[queue] = dispatched_per_queue.get(queue, 0) + row.counts[S.DISPATCHED.value]
    if view.reachable:
        for queue, n in sorted(dispatched_per_queue.items()):
            depth = view.depths.get(queue)
            if view.workers is None:
                said.append(f"{n} DISPATCHED on queue {queue!r} ({depth} messages waiting) and no worker "
                            "answered the inspect broadcast: are the workers running?")
            elif not view.consumers(queue):
                said.append(f"{n} DISPATCHED on queue {queue!r} ({depth} messages waiting): "
                            f"no live worker consumes {queue!r}.")
            else:
                said.append(f"{n} DISPATCHED on queue {queue!r}, {depth} messages waiting for "
                            f"{len(view.consumers(queue))} worker(s) consuming it.")
    if not said:
        said.append("Nothing is waiting: no process is PENDING or DISPATCHED.")
    return said


def build_status(*, inspect_timeout: float, attention_limit: int, workers: bool = True,
                 recovery_hours: float = 24, recovery_limit: int = 50) -> dict:
    """Everything ``GET /api/status`` answers and the page shows."""
    queues = {k.settings.queue for k in registry.kinds()} or {DEFAULT_QUEUE}
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The broker and the workers are asked while the database answers.
        pending_view = pool.submit(broker.look, queues, inspect_timeout, inspect=workers)
        now = utcnow()
        counts = aggregate_counts()
        view = pending_view.result()
    needs = attention(view, now, attention_limit)
    settings = config.get()
    return {
        "generated_at": iso(now),
        "counts": counts.totals,
        "oldest_age_seconds": {s: _age(counts.oldest.get(s), now) for s in ACTIVE},
        "kinds": [row.as_dict(now) for row in counts.kinds],
        "hints": hints(counts, view),
        "needs_attention": needs,
        "needs_attention_capped": len(needs) >= attention_limit,
        "recoveries": recoveries(now, hours=recovery_hours, limit=recovery_limit),
        "recoveries_window_hours": recovery_hours,
        "workers": {"asked": workers, "answered": view.workers_answered, "list": view.workers or [],
                    "inspect_timeout": inspect_timeout},
        "queues": view.as_dict()["queues"],
        "broker": {"url": view.url, "reachable": view.reachable, "error": view.error},
        "database": {"url": redact_url(settings.mongodb_uri), "embedded": settings.embedded_db},
    }
