"""The data of the check-status page and of ``GET /api/status``.

What a view costs follows the live work, never the history (``docs/monitoring.md``): counts
and oldest ages come from aggregations that each ``$match`` ONE status (an index serves an
equality on ``process_status``; SecantusDB scans ``$in`` combined with a range), grouped by
process method: per collection one per live status (exact), READY up to ``READY_CAP``, and
SUCCESS and FAILURE that ended within ``ENDED_WINDOW`` (a range on ``complete_time``). The
all-time figure is the collections' estimated document count, shown as an estimate. The
number of round trips depends on the number of collections, never on the number of
processes. The needs-attention list is ``proc.monitor.stuck.find()`` (indexed queries
returning only candidates), enriched with what the broker and the workers say. The
recently-recovered list is ``proc.monitor.recovery.recent_recoveries()``: one query on the
``time`` index of ``proc_recoveries``, bounded by a window and a count.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import url_for
from pymongo.errors import OperationFailure

from proc import config, monitor, registry
from proc.store import reader
from proc.monitor import hosts as worker_hosts
from proc.monitor import stuck
from proc.run import limits
from proc.monitor import recovery as records
from proc.redact import redact_url
from proc.names import DEFAULT_QUEUE
from proc.status import LIFECYCLE, PROCESSING_VALUES, ProcessStatus as S
from proc.timeutil import age_seconds, format_age, utcnow

from . import broker
from .estimates import about, at_most, estimated_total

#: The states a process is under way in: their boxes show the age of the oldest process.
ACTIVE = PROCESSING_VALUES  # the active statuses, in lifecycle order (proc.status)
STATUSES = tuple(s.value for s in LIFECYCLE)

# Reasons the page adds to proc.monitor.stuck's, from what the broker and the workers say.
NO_CONSUMER = "no worker consumes the queue"
MESSAGE_LOST = "message lost"
WORKERS_BUSY = "workers busy"

#: What the monitor did, in plain words (the actions ``proc.monitor`` records).
ACTION_WORDS = {
    monitor.Action.FAILED: "marked it FAILURE",
    monitor.Action.RETRIED: "sent it again as a new attempt",
    monitor.Action.RESENT: "handed it to the broker again",
    monitor.Action.JOINED: "ran its lost join",
    monitor.Action.ALERTED: "left it alone and warned (recovery policy: alert)",
}

#: The window of the SUCCESS and FAILURE counts: processes that ended within it (the index
#: range ``(process_status, complete_time)``), the same hour as "Where time goes".
ENDED_WINDOW = 3600
#: READY is counted exactly up to this many documents per collection, "more than" beyond.
READY_CAP = 10_000
LIVE = ACTIVE
ENDED = (S.SUCCESS.value, S.FAILURE.value)

#: A group per process method of the documents a ``$match`` selects: the count and the oldest
#: last change. The ``$match`` always names ONE status (an equality, never ``$in`` with a
#: range: SecantusDB scans those), so the index ``(process_status, ...)`` serves it and the
#: documents examined are those of the status (and of the window, for the ended ones).
GROUP = {"$group": {"_id": "$current_process", "count": {"$sum": 1},
                    "oldest": {"$min": "$last_status_change"}}}
#: The same groups when a document's method or last change has a type proc never writes
#: (``proc.store.reader``): such documents are counted in the group ``UNREADABLE``, which names one
#: of them (``example``), instead of failing the aggregation or skewing ``oldest``. Asked only
#: when ``GROUP`` failed or answered a group it could not have answered for documents of
#: proc's types (``_plain``).
UNREADABLE = "!"
GUARDED = {"$group": {
    "_id": {"$cond": [reader.AGGREGATION_OK, "$current_process", UNREADABLE]},
    "count": {"$sum": 1},
    "oldest": {"$min": {"$cond": [reader.AGGREGATION_OK, "$last_status_change", None]}},
    "example": {"$max": {"$cond": [reader.AGGREGATION_OK, None, "$_id"]}},
}}


def selections(now: datetime) -> list[tuple[str, list]]:
    """(status, the stages before the group) of every aggregation of one collection: one
    equality per live status; READY up to ``READY_CAP + 1`` documents; SUCCESS and FAILURE
    within ``ENDED_WINDOW``."""
    since = now - timedelta(seconds=ENDED_WINDOW)
    out = [(status, [{"$match": {"process_status": status}}]) for status in LIVE]
    out.append((S.READY.value, [{"$match": {"process_status": S.READY.value}}, {"$limit": READY_CAP + 1}]))
    out += [(status, [{"$match": {"process_status": status, "complete_time": {"$gte": since}}}])
            for status in ENDED]
    return out


def _plain(group: dict, methods: set) -> bool:
    """Whether a group of ``GROUP`` can only come from documents of proc's types: a date (or
    nothing) as ``oldest`` and a method of the collection (or none)."""
    oldest, method = group.get("oldest"), group["_id"]
    if not (oldest is None or isinstance(oldest, datetime)):
        return False
    return method is None or (isinstance(method, str) and method in methods)


def _groups(coll, stages: list, methods: set, query_log: list | None) -> list[dict]:
    """The groups of one selection of one collection whose process methods are ``methods``:
    ``GROUP``, or ``GUARDED`` when a document of the wrong shape made the first fail or answer
    a group that is not ``_plain`` (a method no longer declared costs the guarded one too)."""
    pipeline = [*stages, GROUP]
    if query_log is not None:
        query_log.append((coll.name, pipeline))
    try:
        groups = list(coll.aggregate(pipeline))
        if all(_plain(g, methods) for g in groups):
            return groups
    except (OperationFailure, TypeError, ValueError):
        pass
    pipeline = [*stages, GUARDED]
    if query_log is not None:
        query_log.append((coll.name, pipeline))
    return list(coll.aggregate(pipeline))


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
    unreadable: reader.Unreadable = field(default_factory=reader.Unreadable)
    """The documents the counts could not group (and, once ``stuck.find`` has read its
    candidates with it, the ones it skipped)."""
    ready_capped: bool = False
    """READY reached ``READY_CAP`` in a collection: its count is a lower bound."""
    estimated: int | None = None
    """Every document of every Proc collection, estimated (``estimated_total``); None when not asked."""

    def basis(self) -> dict[str, str]:
        """What each status's count covers, in words."""
        hours = f"{ENDED_WINDOW / 3600:g} h"
        out = {s: "exact" for s in LIVE}
        out[S.READY.value] = (f"more than {READY_CAP:,} (counted up to {READY_CAP:,} per collection)"
                              if self.ready_capped else "exact")
        for s in ENDED:
            out[s] = f"ended in the last {hours}"
        return out

    def texts(self) -> dict[str, str]:
        """Each status's count as the page shows it."""
        out = {s: f"{n:,}" for s, n in self.totals.items()}
        if self.ready_capped:
            out[S.READY.value] = at_most(READY_CAP + 1, READY_CAP)
        return out


def aggregate_counts(query_log: list | None = None, *, now: datetime | None = None,
                     estimate: bool = False) -> Counts:
    """Counts and oldest change per status and per kind, from aggregations an index serves:
    per collection one per live status (exact), READY up to ``READY_CAP`` (exact below it) and
    SUCCESS and FAILURE that ended within ``ENDED_WINDOW``. The documents examined are the live
    ones, those of the window and at most ``READY_CAP`` READY ones: never the history.
    ``estimate`` adds the all-time estimate of every collection (``estimated_total``)."""
    now = now or utcnow()
    registered = {(k.collection, k.method): k for k in registry.kinds()}
    rows: dict[tuple, KindRow] = {key: KindRow(key[0], key[1], kind) for key, kind in registered.items()}
    totals, oldest = zero_counts(), {}
    unreadable = reader.Unreadable(grouped=True)
    ready_capped, estimated = False, 0 if estimate else None
    for cls in registry.proc_classes():
        collection = cls._get_collection_name()
        methods = {method for (c, method) in registered if c == collection}
        if estimate:
            estimated += estimated_total(cls)
        for status, stages in selections(now):
            found = 0
            for group in _groups(cls._get_collection(), stages, methods, query_log):
                found += group["count"]
                if group["_id"] == UNREADABLE:  # one more read, only when there is such a document
                    example = cls._get_collection().find_one({"_id": group["example"]})
                    unreadable.add(collection, group["example"],
                                   reader.problem(example) or "changed while it was read", group["count"])
                    continue
                method = group["_id"] or None
                key = (collection, method)
                row = rows.get(key) or rows.setdefault(key, KindRow(collection, method, registered.get(key)))
                row.counts[status] += group["count"]
                totals[status] += group["count"]
                when = group.get("oldest")
                if status in LIVE and isinstance(when, datetime):
                    for target in (row.oldest, oldest):
                        if status not in target or when < target[status]:
                            target[status] = when
            if status == S.READY.value and found > READY_CAP:
                ready_capped = True
    in_use = limits.usage()
    for row in rows.values():
        row.in_use = in_use.get(row.name, 0)
    ordered = sorted(rows.values(), key=lambda r: (r.collection, r.method is not None, r.method or ""))
    return Counts(totals, oldest, ordered, unreadable, ready_capped, estimated)


def iso(value) -> str | None:
    """A stored time (naive UTC) as ISO 8601 with milliseconds and a Z."""
    return value.isoformat(timespec="milliseconds") + "Z" if isinstance(value, datetime) else None


def _age(when: datetime | None, now: datetime) -> float | None:
    age = age_seconds(when, now)
    return None if age is None else round(max(age, 0.0), 1)


def attention(view: broker.BrokerView | None, now: datetime, limit: int,
              unreadable: reader.Unreadable | None = None) -> list[dict]:
    """The processes that need attention, each with the plainest reason the service can tell
    (the candidates it cannot read are counted in ``unreadable``)."""
    found = stuck.find(now, limit=limit, unreadable=unreadable)
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
    counted = view.broker_consumers.get(queue)  # RabbitMQ counts consumers; Redis does not
    if view.workers is None:
        if not depth:
            return MESSAGE_LOST, (f"message lost (queue {queue!r} empty) and no worker answered the "
                                  "inspect broadcast: redispatch it once a worker runs")
        if counted:
            return WORKERS_BUSY, (f"{waiting} in queue {queue!r}, which the broker counts {counted} "
                                  "consumer(s) of; no worker answered the inspect broadcast in time "
                                  "(busy or overloaded workers?)")
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
    return [recovery(r, now) for r in records.recent_recoveries(limit, since=now - timedelta(hours=hours))]


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
        counts = aggregate_counts(now=now, estimate=True)
        view = pending_view.result()
    needs = attention(view, now, attention_limit, counts.unreadable)
    settings = config.get()
    return {
        "unreadable": counts.unreadable.as_dict(),
        "generated_at": iso(now),
        "counts": counts.totals,
        "count_basis": counts.basis(),
        "count_text": counts.texts(),
        "ended_window_seconds": ENDED_WINDOW,
        "ready_cap": READY_CAP,
        "all_time": {"estimated": True, "processes": counts.estimated, "text": about(counts.estimated)},
        "oldest_age_seconds": {s: _age(counts.oldest.get(s), now) for s in ACTIVE},
        "kinds": [row.as_dict(now) for row in counts.kinds],
        "hints": hints(counts, view),
        "needs_attention": needs,
        "needs_attention_capped": len(needs) >= attention_limit,
        "recoveries": recoveries(now, hours=recovery_hours, limit=recovery_limit),
        "recoveries_window_hours": recovery_hours,
        "workers": {"asked": workers, "answered": view.workers_answered, "list": view.workers or [],
                    "inspect_timeout": inspect_timeout, "counts_timeout": broker.counts_timeout(inspect_timeout)},
        "hosts": worker_hosts.hosts(now),
        "hosts_silent_after_seconds": worker_hosts.silent_after(),
        "queues": view.as_dict()["queues"],
        "broker": {"url": view.url, "reachable": view.reachable, "error": view.error},
        "database": {"url": redact_url(settings.mongodb_uri), "embedded": settings.embedded_db},
    }
