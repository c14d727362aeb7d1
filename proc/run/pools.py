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

A worker also judges its own dead pool processes (``lost_here``): the claim records the pid
and that process's start time (``worker_pid_start``: clock ticks since boot, field 22 of
``/proc/<pid>/stat``), so a pid that a new process took meanwhile is not taken for the old
one. Only the worker that claimed an attempt (same node name) judges it this way; the
processes of other hosts are the monitor's.

The handlers here are connected by ``proc.run.messaging.connect_signal_handlers``.
"""
from __future__ import annotations

import logging
import os
import signal as signals_module
import threading
import time

from bson import json_util

from .. import machine
from ..store import db
from ..names import RUN_TASK

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


revoke_listeners: list = []
"""Called as ``listener(attempt, terminated, signum)`` in a thread of the worker's main
process when a ``proc.run`` message is revoked there (not when it expired), before the stop
of a terminated one is recorded. ``proc.tasks`` adds the record of a revoke sent by
Celery's own tools (Flower, ``celery control``) as a cancel."""


def record_termination(sender=None, request=None, terminated=False, signum=None, expired=False, **_) -> None:
    """``task_revoked`` in the worker's main process: tell the ``revoke_listeners``, then, once
    the pool process that ran a terminated ``proc.run`` is gone, write the history mark ``stopped``."""
    if expired or getattr(sender, "name", None) != RUN_TASK or request is None:
        return
    if not terminated and not revoke_listeners:
        return
    try:
        collection, id_json, _method, _args, _kwargs, number = request.args
        attempt = machine.Attempt(collection, json_util.loads(id_json), int(number))
    except (TypeError, ValueError) as exc:
        log.warning("terminated task %s has arguments proc cannot read: %s", getattr(request, "id", "?"), exc)
        return
    threading.Thread(target=_after_revoke, args=(attempt, terminated, signum), daemon=True,
                     name=f"proc-stop-{attempt.key}").start()


def _after_revoke(attempt: machine.Attempt, terminated: bool, signum) -> None:
    for listener in list(revoke_listeners):
        try:
            listener(attempt, terminated, signum)
        except Exception:
            log.exception("a listener of the revoke of %s failed", attempt)
    if terminated:
        _confirm_stop(attempt, signum)


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


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it does not run or there is
    no ``/proc``. With the pid, it names one process: a reused pid has a later start."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


_own: dict[int, int | None] = {}


def own_process() -> tuple[int, int | None]:
    """This process's pid and start (``process_start``), read once per process: every claim
    records them, and a process's start never changes (a forked child has a pid of its own)."""
    pid = os.getpid()
    try:
        return pid, _own[pid]
    except KeyError:
        start = _own[pid] = process_start(pid)
        return pid, start


def runs(pid: int, start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (a zombie does not; a
    process that took the pid later is another one). Without a recorded start, the pid decides."""
    if process_gone(pid):
        return False
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def lost_here(raw: dict | None, hostname: str) -> str | None:
    """Why ``raw``'s RUNNING attempt has lost its pool process on this worker (``hostname``),
    or None: it is not RUNNING, another worker claimed it, no pid was recorded, or the process
    still runs. Call it on the host of worker ``hostname`` only (pids are per machine)."""
    if not raw or raw.get("process_status") != "RUNNING" or raw.get("worker_hostname") != hostname:
        return None
    pid = raw.get("worker_pid")
    if not isinstance(pid, int) or pid == os.getpid() or runs(pid, raw.get("worker_pid_start")):
        return None
    return f"pool process {pid} of worker {hostname} died (seen by that worker)"


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
