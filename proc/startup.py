"""Checks every separate server process runs before it starts serving.

A Celery worker, the API server (``procctl serve``, ``gunicorn api.wsgi:app``) and the
monitor (``procctl monitor``) each run as a process of their own, so each one needs a
real MongoDB. ``check_separate_process`` refuses to start, with one clear line, when:

- ``MONGODB_URI`` is the embedded database (it lives inside one process; this one would
  see none of the data);
- the database does not answer a ping (the message names the URI, password hidden);
- ``PROC_MODELS`` names a module that does not import;
- ``PROC_DB_OUTAGE_TIMEOUT`` is not below every kind's ``heartbeat_timeout`` (a worker
  riding out an outage would be declared dead by the monitor meanwhile), or the worker's lease
  (``PROC_LEASE``, self-fencing) is below ``PROC_DB_OUTAGE_TIMEOUT`` or not below a kind's
  ``heartbeat_timeout`` minus one heartbeat interval and ``PROC_CLOCK_MARGIN`` (a cut-off
  worker's code would still run when the monitor sends the process again);
- the Celery app asks for quorum queues (``task_default_queue_type="quorum"``), which proc
  does not support yet (``proc.run.messaging.check_queue_type``);
- a check the application hands in says no (``checks``): the datafix's
  ``migrations.guard.refuse_if_legacy`` refuses documents still in the old shape. The core
  never imports the datafix: each application (``celery_app``, ``procctl``, ``api.wsgi``)
  passes its checks, as Dramatiq takes its middleware as an explicit list.

Processes that fork (the worker's pool, gunicorn's workers) run the check in the parent
and disconnect afterwards (``disconnect=True``): no MongoClient crosses a fork, and each
child connects on its first use (``proc.store.db``).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from . import config, registry
from .store import db
from .exceptions import ConfigurationError

log = logging.getLogger(__name__)


def require_real_database(what: str) -> None:
    """Refuse the embedded database in a process of its own: it would see none of the data."""
    if config.get().embedded_db:
        raise ConfigurationError(
            f"{what} runs as its own process, but MONGODB_URI is the embedded database "
            f"({config.get().mongodb_uri}), which lives inside a single process and would be empty "
            "here. Set MONGODB_URI=mongodb://host:27017/dbname (a real MongoDB), or run "
            "`procctl demo`, which runs workers and the status page in one process."
        )


def check_outage_timeout(kinds=None) -> None:
    """``PROC_DB_OUTAGE_TIMEOUT`` must be below every kind's ``heartbeat_timeout``."""
    outage = config.get().db_outage_timeout
    for kind in registry.kinds() if kinds is None else kinds:
        beat = kind.settings.heartbeat_timeout
        if outage >= beat:
            raise ConfigurationError(
                f"PROC_DB_OUTAGE_TIMEOUT={outage:g} s is not below the heartbeat_timeout of "
                f"{kind.name} ({beat:g} s): a worker riding out a database outage would be taken for "
                "dead by the monitor meanwhile. Lower PROC_DB_OUTAGE_TIMEOUT or raise that kind's "
                "heartbeat_timeout (@process or PROC_KIND_SETTINGS)")
    check_lease(kinds)


def check_lease(kinds=None) -> None:
    """The lease sits between the two promises: at least ``PROC_DB_OUTAGE_TIMEOUT`` (a restart
    shorter than that costs nothing) and below every kind's ``heartbeat_timeout`` minus one
    heartbeat interval and the clock margin (the code stops before the monitor re-sends)."""
    s = config.get()
    lease = s.effective_lease
    if lease == 0:
        return
    if lease < s.db_outage_timeout:
        raise ConfigurationError(
            f"PROC_LEASE={lease:g} s is below PROC_DB_OUTAGE_TIMEOUT={s.db_outage_timeout:g} s: a "
            "worker would stop its code during a database restart it is meant to ride out. Raise "
            "PROC_LEASE (or leave it unset: it defaults to PROC_DB_OUTAGE_TIMEOUT)")
    for kind in registry.kinds() if kinds is None else kinds:
        beat = kind.settings.heartbeat_timeout
        room = beat - s.heartbeat_interval - s.clock_margin
        if lease >= room:
            raise ConfigurationError(
                f"the worker's lease ({lease:g} s, PROC_LEASE or PROC_DB_OUTAGE_TIMEOUT) is not below "
                f"the heartbeat_timeout of {kind.name} ({beat:g} s) minus PROC_HEARTBEAT_INTERVAL "
                f"({s.heartbeat_interval:g} s) and PROC_CLOCK_MARGIN ({s.clock_margin:g} s) = {room:g} s: a "
                "cut-off worker's code could still run when the monitor sends the process again. "
                "Lower PROC_LEASE / PROC_DB_OUTAGE_TIMEOUT or raise that kind's heartbeat_timeout")


Check = Callable[[str], None]
"""A startup check: called with what is starting; raises ``ConfigurationError`` to refuse."""


def check_separate_process(what: str, *, checks: Iterable[Check] = (), disconnect: bool = False) -> None:
    """Every check of the module docstring, then each of ``checks`` in order; raises
    ``ConfigurationError`` naming the problem.

    ``disconnect=True`` closes the connection afterwards, for a process about to fork.
    """
    require_real_database(what)
    from .run import messaging

    messaging.check_queue_type(messaging.get_app())  # configuration alone: before any connection
    db.connect()
    try:
        db.ping()
        registry.load_models()
        check_outage_timeout()
        for check in checks:
            check(what)
    finally:
        if disconnect:
            db.disconnect()


def check_worker_can_start(checks: Iterable[Check] = ()) -> None:
    """Run in the worker's main process before it forks its pool. The worker then records that
    it is alive for the view of many hosts (``proc.run.presence``)."""
    check_separate_process("A Celery worker", checks=checks, disconnect=True)
    from .run import presence

    presence.enable()
