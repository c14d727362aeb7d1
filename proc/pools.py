"""What kind of Celery pool runs a process, and the worker's record of a forced stop.

A worker tells which pool it runs when it starts (``worker_init``); every attempt it claims
records that pool and the pid of the process that runs the method (``worker_pool``,
``worker_pid``), so an operator's forced stop (``proc.terminate``) knows, before it asks,
whether the pool can stop running code at all.

Only the prefork pool can: it runs each method in a child process, and Celery's
``revoke(terminate=True)`` sends that process a signal. Threads and solo run the method in
the worker's own process, which nothing can stop from outside without stopping every other
process it runs; eventlet and gevent can only kill a greenlet that yields. proc claims a
forced stop on prefork only, and records it as done (the history mark ``stopped``) only
once the worker saw the pool process gone.

The handlers here are connected by ``proc.messaging.connect_signal_handlers``.
"""
from __future__ import annotations

import logging
import os
import signal as signals_module
import threading
import time

from bson import json_util

from . import db, machine
from .names import RUN_TASK

log = logging.getLogger(__name__)

CAN_TERMINATE = frozenset({"prefork"})
"""The pools whose running code ``revoke(terminate=True)`` stops."""

_pools: dict[str, str] = {}
"""Worker node name -> pool name, for the workers of this process (and, after a fork, of its parent)."""


def pool_name(pool_cls) -> str:
    """``prefork``, ``threads``, ``solo``, ``eventlet``, ``gevent`` (or the class's own name)."""
    if isinstance(pool_cls, str):
        return {"processes": "prefork"}.get(pool_cls, pool_cls.rsplit(":", 1)[0].rsplit(".", 1)[-1])
    module = getattr(pool_cls, "__module__", "") or ""
    last = module.rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(last, last or type(pool_cls).__name__)


def pool_of(hostname: str | None) -> str | None:
    """The pool of the worker ``hostname`` runs in this process, if it told."""
    return _pools.get(hostname or "")


def record_pool(sender=None, **_) -> None:
    """``worker_init``: remember which pool this worker runs."""
    hostname, pool_cls = getattr(sender, "hostname", None), getattr(sender, "pool_cls", None)
    if hostname and pool_cls is not None:
        _pools[hostname] = pool_name(pool_cls)


def record_termination(sender=None, request=None, terminated=False, signum=None, **_) -> None:
    """``task_revoked`` in the worker's main process: once the pool process that ran a
    terminated ``proc.run`` is gone, write the history mark ``stopped``."""
    if not terminated or getattr(sender, "name", None) != RUN_TASK or request is None:
        return
    try:
        collection, id_json, _method, _args, _kwargs, number = request.args
        attempt = machine.Attempt(collection, json_util.loads(id_json), int(number))
    except (TypeError, ValueError) as exc:
        log.warning("terminated task %s has arguments proc cannot read: %s", getattr(request, "id", "?"), exc)
        return
    threading.Thread(target=_confirm_stop, args=(attempt, signum), daemon=True,
                     name=f"proc-stop-{attempt.key}").start()


def signal_name(signum) -> str:
    try:
        return signals_module.Signals(int(signum)).name
    except (TypeError, ValueError):
        return str(signum)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie not yet reaped by the pool counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _confirm_stop(attempt: machine.Attempt, signum, *, timeout: float = 10.0) -> None:
    try:
        raw = db.retrying(lambda: db.database()[attempt.collection].find_one(
            {"_id": attempt.id}, {"worker_pid": 1, "attempt": 1}), f"reading {attempt}")
        pid = (raw or {}).get("worker_pid") if (raw or {}).get("attempt") == attempt.number else None
        deadline = time.monotonic() + timeout
        while pid and not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and not process_gone(pid):
            log.warning("%s: %s sent to pool process %s, which is still running after %.0f s",
                        attempt, signal_name(signum), pid, timeout)
            return
        where = f"pool process {pid}" if pid else "its pool process"
        db.retrying(lambda: machine.mark(attempt, "stopped", note=f"the code was terminated "
                                         f"({signal_name(signum)} to {where})"), f"recording the stop of {attempt}")
    except Exception:
        log.exception("could not record the forced stop of %s", attempt)
