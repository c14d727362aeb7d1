"""Each worker says it is alive, in the database, for the view of many hosts.

A Celery worker's main process writes one document of ``proc_workers`` (``_id``: its node name)
every ``PROC_HEARTBEAT_INTERVAL`` seconds from ``worker_ready`` until ``worker_shutdown``:
the machine (``host``), pool, concurrency, queues consumed, pid, this process's measured clock
offset from the database server (``proc.timeutil``) and ``last_seen`` (server time). A warm
shutdown deletes the document; a worker that dies, freezes or is cut off stops writing, and
``proc.monitor.hosts`` names it, with its RUNNING processes, once ``last_seen`` is old.

Only workers started as processes of their own write it (``enable()``, called by
``proc.startup.check_worker_can_start``); in-process workers (tests, the demo) do not.

One single-document upsert filtered by ``_id`` per interval per worker; never a status write.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from .. import config, timeutil
from ..store import db
from . import pools

log = logging.getLogger(__name__)

COLLECTION = "proc_workers"

_running: dict[str, threading.Event] = {}


def record(name: str, fields: dict) -> None:
    """Write worker ``name``'s document now (``last_seen`` and the clock offset added)."""
    clock = timeutil.clock()
    db.database()[COLLECTION].update_one(
        {"_id": name},
        {"$set": {**fields, "clock_offset": clock["offset"], "clock_rtt": clock["rtt"],
                  "last_seen": timeutil.utcnow()}},
        upsert=True)


def _describe(sender) -> dict:
    name = getattr(sender, "hostname", None) or socket.gethostname()
    queues = []
    try:
        queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    except Exception:  # a worker without the usual attributes (tests): the queues stay unknown
        pass
    return {"host": socket.gethostname(), "pool": pools.pool_of(name),
            "concurrency": getattr(sender, "concurrency", None), "queues": queues, "pid": os.getpid()}


def start(sender=None, **_) -> threading.Thread | None:
    """``worker_ready``: start writing this worker's document every heartbeat interval."""
    name = getattr(sender, "hostname", None)
    if not name or name in _running:
        return None
    fields = _describe(sender)
    stopping = _running[name] = threading.Event()

    def run():
        failures = 0
        while not stopping.is_set():
            try:
                record(name, fields)
                failures = 0
            except Exception as exc:  # cut off or the database away: say so once, keep trying
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "worker %s could not record that it is alive (%s)", name, type(exc).__name__)
            stopping.wait(config.get().heartbeat_interval)

    thread = threading.Thread(target=run, daemon=True, name=f"proc-presence-{name}")
    thread.start()
    return thread


def stop(sender=None, **_) -> None:
    """``worker_shutdown``: stop writing and delete this worker's document (a warm shutdown)."""
    name = getattr(sender, "hostname", None)
    stopping = _running.pop(name or "", None)
    if stopping is None:
        return
    stopping.set()
    try:
        db.database()[COLLECTION].delete_one({"_id": name})
    except Exception as exc:
        log.warning("worker %s could not remove its record from %s (%s)", name, COLLECTION, type(exc).__name__)


def enable() -> None:
    """Connect ``start`` and ``stop`` to this process's worker signals (idempotent)."""
    from celery import signals

    signals.worker_ready.connect(start, weak=False, dispatch_uid="proc.run.presence.start")
    signals.worker_shutdown.connect(stop, weak=False, dispatch_uid="proc.run.presence.stop")
