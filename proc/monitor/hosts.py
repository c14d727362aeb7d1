"""The view of many hosts: per worker, what it said of itself and what it runs.

Each worker started as a process of its own records itself every heartbeat interval
(``proc.run.presence``: pool, concurrency, queues, clock offset, ``last_seen`` on the server's
clock). Its RUNNING processes come from one aggregation per collection that matches ONE status
(RUNNING) and groups by ``worker_hostname``: how many, their heartbeats (the oldest is taken
here, so a malformed one is skipped, not compared), and which ones (at most ``SHOWN`` named). The cost follows the live work (workers and RUNNING processes), never
the history.

A worker not seen for longer than ``silent_after()`` (three heartbeat intervals, at least 5 s)
has stopped answering: it died, froze, or is cut off; the view names it with its RUNNING
processes ("w1@a has not answered for 40 s; its 3 RUNNING processes' heartbeats are 40 s old").
A record not seen for an hour and running nothing is left out (a worker killed long ago).
"""
from __future__ import annotations

from datetime import datetime

from .. import config, registry
from ..run import presence
from ..store import db
from ..status import ProcessStatus as S
from ..timeutil import age_seconds, utcnow

SHOWN = 10
"""RUNNING processes named per worker."""
FORGET_AFTER = 3600.0
"""Seconds after which a record that runs nothing is left out."""
LIMIT = 500
"""At most this many worker records are read."""


def silent_after() -> float:
    """Seconds without a record after which a worker counts as not answering."""
    return max(3 * config.get().heartbeat_interval, 5.0)


def running_by_worker() -> dict[str, dict]:
    """worker_hostname -> {"count", "oldest_heartbeat", "processes": [...]} over every collection."""
    found: dict[str, dict] = {}
    for collection in sorted({k.collection for k in registry.kinds()}):
        rows = db.database()[collection].aggregate([
            {"$match": {"process_status": S.RUNNING.value}},
            {"$group": {"_id": "$worker_hostname", "count": {"$sum": 1},
                        "processes": {"$push": {"id": "$_id", "method": "$current_process", "beat": "$heartbeat"}}}},
        ])
        for row in rows:  # a field of a type proc never writes is read as missing (proc.store.reader)
            name = row["_id"] if isinstance(row["_id"], str) and row["_id"] else "?"
            entry = found.setdefault(name, {"count": 0, "oldest_heartbeat": None, "processes": []})
            entry["count"] += row["count"]
            for p in row["processes"]:
                beat = p.get("beat")
                if isinstance(beat, datetime) and (entry["oldest_heartbeat"] is None or beat < entry["oldest_heartbeat"]):
                    entry["oldest_heartbeat"] = beat
                if len(entry["processes"]) < SHOWN:
                    method = p.get("method")
                    entry["processes"].append({"collection": collection, "id": str(p["id"]),
                                               "method": method if isinstance(method, str) else None})
    return found


def hosts(now: datetime | None = None) -> list[dict]:
    """Every worker that recorded itself (or runs a process), the silent ones first."""
    now = now or utcnow()
    quiet = silent_after()
    records = {r["_id"]: r for r in db.database()[presence.COLLECTION].find({}, limit=LIMIT)}
    running = running_by_worker()
    out = []
    for name in sorted(set(records) | set(running)):
        record, work = records.get(name), running.get(name) or {"count": 0, "oldest_heartbeat": None, "processes": []}
        seen = age_seconds(record.get("last_seen"), now) if record else None
        if record and work["count"] == 0 and (seen is None or seen > FORGET_AFTER):
            continue
        beat = age_seconds(work["oldest_heartbeat"], now)
        answering = seen is not None and seen <= quiet if record else (beat is None or beat <= quiet)
        entry = {
            "name": name, "registered": record is not None,
            "host": (record or {}).get("host"), "pool": (record or {}).get("pool"),
            "concurrency": (record or {}).get("concurrency"), "busy": work["count"],
            "queues": (record or {}).get("queues"), "clock_offset_seconds": (record or {}).get("clock_offset"),
            "last_seen_age_seconds": seen, "oldest_heartbeat_age_seconds": beat,
            "answering": answering, "running": work["processes"], "said": None,
        }
        if not answering:
            n = work["count"]
            runs = (f"its {n} RUNNING process{'es' if n != 1 else ''}' heartbeat{'s are' if n != 1 else ' is'} "
                    f"{int(beat or 0)} s old" if n else "it runs no process")
            entry["said"] = (f"{name} has not answered for {int(seen)} s; {runs}" if record else
                             f"{name} keeps no record of itself (not started as a worker process of its own); {runs}")
        out.append(entry)
    out.sort(key=lambda e: (e["answering"], e["name"]))
    return out
