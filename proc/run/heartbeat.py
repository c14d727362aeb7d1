"""Heartbeats of running processes: one background thread per worker process.

While a worker runs a process, its ``heartbeat`` field is refreshed every
``PROC_HEARTBEAT_INTERVAL`` seconds. Progress text set with ``doc.set_step()`` rides on
the same write: at most one write per interval per process. A worker that dies stops
heartbeating (the monitor notices); a method hung inside a live worker keeps
heartbeating (``expected_duration`` guards that case). Writes are conditional on the
attempt and RUNNING, so a superseded attempt's heartbeat changes nothing.

A beat that finds its attempt no longer RUNNING reads the document once to tell a cancel
(``proc.ops.admin.cancel``) from a recovery by the monitor. After a cancel, the method's next
``set_step()`` raises ``ProcessCancelled`` in its own thread (``doc.cancel_requested()``
asks without writing a step); after a recovery the method runs on, its writes ignored.

Self-fencing. A worker cannot tell "the database restarted" from "I am cut off", so each beat
holds a lease (``PROC_LEASE``, default ``PROC_DB_OUTAGE_TIMEOUT``; the startup check keeps it
at least that, and below every kind's ``heartbeat_timeout`` minus one interval and
``PROC_CLOCK_MARGIN``). A beat whose heartbeat the database has not accepted for longer than
the lease has lost it: it writes nothing more, the method's next ``set_step()`` raises
``ProcessCancelled("lease lost: heartbeat not accepted for N s")``, and code that does not
report is stopped by its own worker a moment later (prefork: the pool process sends itself
SIGTERM, then SIGKILL; it cannot ask the broker or the database, it is cut off). Threads and
solo pools cannot stop code that does not report: it runs on, and its writes change nothing.
The attempt's end is never written (``proc.run.execution``): the monitor sends the process
again after the heartbeat timeout, by which time the code has stopped, so two copies never run
at once. ``self.attempt`` is the fencing token to hand to side effects outside proc. Heartbeat
writes are bounded (``pymongo.timeout``) so a write into a cut link cannot hold the check.

Each beat belongs to the worker (Celery node name) that runs it. A worker process that
dies takes the heartbeat thread with it; an in-process worker that is torn down while
its method is still blocked (tests) is "killed" with ``stop_worker(hostname)``, which
stops every beat of that worker for good, including step writes of its still-running
methods.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pymongo
from pymongo.errors import ExecutionTimeout, WTimeoutError

from .. import config, machine
from ..store import db
from . import pools
from ..exceptions import ProcessCancelled
from ..status import ProcessStatus as S
from ..timeutil import utcnow

log = logging.getLogger(__name__)

_UNSET = object()


class Beat:
    """The heartbeat of one attempt of one process, run by the thread that runs it."""

    def __init__(self, attempt: machine.Attempt, interval: float, host: str | None = None):
        self.attempt = attempt
        self.interval = interval
        self.host = host
        self.stopped = False
        self.last_write = time.monotonic()  # the RUNNING claim wrote the first heartbeat
        self.pending_step = _UNSET
        self.superseded = False
        self.cancelled: str | None = None
        """Who cancelled this attempt ("cancelled by ..."), once a beat found out."""
        self.failures = 0
        """Beats in a row that the database did not take (an outage)."""
        self.lock = threading.Lock()
        self.lease = config.get().effective_lease
        self.accepted = self.last_write
        """When (monotonic) the last heartbeat the database accepted was sent."""
        self.lease_lost: str | None = None
        """"lease lost: heartbeat not accepted for N s", once the lease ran out."""
        self.kill_at: float | None = None
        self.pool = pools.pool_of(host)

    @property
    def due(self) -> float:
        return self.last_write + self.interval

    def write(self, step=_UNSET) -> None:
        """Write the heartbeat (and the pending step) now. Never raises: while the database is
        away the step stays pending and the next beat, an interval later, tries again."""
        with self.lock:
            if self.stopped:
                return
            if self.lease_lost:  # the attempt is given up: nothing more is written
                self.last_write = time.monotonic()
                return
            if step is not _UNSET:
                self.pending_step = step
            fields = {"heartbeat": utcnow()}
            sent = self.pending_step
            if sent is not _UNSET:
                fields["current_process_step"] = sent
            self.pending_step = _UNSET
            self.last_write = sent_at = time.monotonic()
        try:
            with pymongo.timeout(WRITE_TIMEOUT(self.interval)):
                matched = machine.update_fields(self.attempt, statuses=[S.RUNNING], fields=fields)
        except db.OUTAGE_ERRORS + (ExecutionTimeout, WTimeoutError) as exc:
            with self.lock:
                if self.pending_step is _UNSET and not self.stopped:
                    self.pending_step = sent  # keep it for the next beat (or the final write)
                failures, self.failures = self.failures, self.failures + 1
            (log.warning if failures == 0 else log.debug)(
                "heartbeat of %s not written, the database is away (%s); the step is kept "
                "and written with the next beat", self.attempt, type(exc).__name__)
            return
        with self.lock:
            self.accepted = max(self.accepted, sent_at)
        if self.failures:
            log.warning("heartbeat of %s written again after %d failed beat(s)",
                        self.attempt, self.failures)
            self.failures = 0
        if not matched:
            first, self.superseded = not self.superseded, True
            if first:  # one read, only after the first miss: a cancel, or a recovery?
                try:
                    self.cancelled = cancelled_by(self.attempt)
                except db.OUTAGE_ERRORS:
                    self.superseded = False  # ask again with the next beat
                    return
            log.warning("%s was %s (no longer RUNNING at this attempt); its heartbeat writes "
                        "change nothing", self.attempt, self.cancelled or "superseded")

    def touch(self, step) -> None:
        """Record ``step`` for the heartbeat thread: written at once if the last write is an
        interval old, else with the next beat. The method's thread never waits for the database.
        Raises ``ProcessCancelled`` once a beat found the attempt cancelled."""
        if self.cancelled:
            raise ProcessCancelled(self.cancelled)
        if self.lease > 0 and self.lease_lost is None:
            self.check_lease(time.monotonic())
        if self.lease_lost:
            raise ProcessCancelled(self.lease_lost)
        with self.lock:
            if self.stopped:
                return
            self.pending_step = step
        if time.monotonic() >= self.due:
            _wake.set()

    @property
    def lease_due(self) -> float | None:
        """When (monotonic) the lease check has something to do next; None: nothing."""
        if self.lease <= 0 or self.stopped:
            return None
        if self.lease_lost is None:
            return self.accepted + self.lease
        return self.kill_at

    def check_lease(self, now: float) -> None:
        """Run by the heartbeat thread: note a lost lease; stop code that still runs after it."""
        if self.lease <= 0 or self.stopped:
            return
        if self.lease_lost is None:
            silent = now - self.accepted
            if silent <= self.lease:
                return
            self.lease_lost = f"lease lost: heartbeat not accepted for {silent:.0f} s"
            log.error("%s: %s (lease %g s); its code stops: the next set_step() raises "
                      "ProcessCancelled, code that does not report is stopped by this worker, and "
                      "the attempt's end is not written: the monitor sends the process again",
                      self.attempt, self.lease_lost, self.lease)
            self.kill_at = now + min(self.interval, 1.0)  # a moment for code that reports
            return
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            _stop_silent_code(self)

    def take_pending_fields(self) -> dict:
        """The step not yet written, as fields for the final status write (empty if none)."""
        with self.lock:
            step, self.pending_step = self.pending_step, _UNSET
        return {} if step is _UNSET else {"current_process_step": step}


def WRITE_TIMEOUT(interval: float) -> float:
    """How long one heartbeat write may take: a write into a cut link must not hold the lease
    check of the heartbeat thread."""
    return max(0.5, min(interval, 5.0))


def _stop_silent_code(beat: Beat) -> None:
    """The lease is lost and the method still runs without reporting: stop it, if this pool can."""
    if beat.pool not in pools.CAN_TERMINATE:
        log.error("%s: the lease is lost, but a %s pool cannot stop code that does not report; it "
                  "runs on, its writes change nothing (use prefork, or call set_step())",
                  beat.attempt, beat.pool or "in-process")
        return
    log.critical("%s: the lease is lost and its code does not report; this pool process (pid %d) "
                 "stops itself", beat.attempt, os.getpid())
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)  # still here: SIGTERM was caught; nothing may run on
    os.kill(os.getpid(), signal.SIGKILL)


def cancelled_by(attempt: machine.Attempt) -> str | None:
    """"cancelled by <actor>" if ``attempt`` was ended by a cancel, else None (one read)."""
    raw = db.database()[attempt.collection].find_one(
        {"_id": attempt.id}, {"attempt": 1, "process_status": 1, "history": {"$slice": -5}})
    if not raw or raw.get("attempt") != attempt.number or raw.get("process_status") != S.FAILURE.value:
        return None
    for entry in reversed(raw.get("history") or []):
        if entry.get("event") == "fail" and entry.get("attempt") == attempt.number:
            note = entry.get("note") or ""
            return note if note.startswith("cancelled by ") else None
    return None


_beats: dict[int, Beat] = {}
_beats_lock = threading.Lock()
_stopped_hosts: set[str] = set()  # workers stopped for good: a beat they start later is born stopped
_local = threading.local()
_wake = threading.Event()
_planned_wake = [0.0]  # when the thread will look next (monotonic)
_thread: threading.Thread | None = None


def _run() -> None:
    while True:
        with _beats_lock:
            beats = list(_beats.values())
        now = time.monotonic()
        next_due = now + 1.0
        for beat in beats:
            beat.check_lease(now)  # first: a process paused past its lease (SIGSTOP) writes nothing
            if beat.due <= now:
                try:
                    beat.write()
                except Exception:  # the DB may be briefly away; try at the next interval
                    log.exception("heartbeat of %s failed", beat.attempt)
            beat.check_lease(time.monotonic())
            next_due = min(next_due, beat.due)
            if beat.lease_due is not None:
                next_due = min(next_due, beat.lease_due)
        _planned_wake[0] = next_due
        _wake.wait(timeout=max(0.01, next_due - time.monotonic()))
        _wake.clear()


def start(attempt: machine.Attempt, host: str | None = None) -> Beat:
    """Begin heartbeating one attempt in the calling thread, on behalf of worker ``host``."""
    global _thread
    beat = Beat(attempt, config.get().heartbeat_interval, host)
    with _beats_lock:
        if host is not None and host in _stopped_hosts:
            # The worker was stopped for good between this attempt's claim and here: the
            # beat must not outlive it (a killed worker's late beat kept a dead attempt fresh).
            beat.stopped = True
            _local.beat = beat
            return beat
        _beats[_key(beat)] = beat
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="proc-heartbeat", daemon=True)
            _thread.start()
    _local.beat = beat
    if beat.due < _planned_wake[0]:  # due before the thread looks again: wake it
        _wake.set()
    return beat


def _key(beat: Beat) -> int:
    return id(beat)


def stop(beat: Beat) -> None:
    with _beats_lock:
        _beats.pop(_key(beat), None)
    with beat.lock:
        beat.stopped = True
    if getattr(_local, "beat", None) is beat:
        _local.beat = None


def current() -> Beat | None:
    return getattr(_local, "beat", None)


def touch(doc, step) -> bool:
    """Route a step update of ``doc`` through the running beat of this thread, if it is its."""
    beat = current()
    if beat is None or beat.attempt.id != doc.pk or beat.attempt.number != doc.attempt \
            or beat.attempt.collection != doc._get_collection_name():
        return False
    beat.touch(step)
    return True


def stop_worker(host: str) -> int:
    """Stop every beat of worker ``host`` for good (its process died, or it was torn down).

    Returns how many beats were stopped. The methods those beats belonged to may still be
    running in this process; they no longer write heartbeats or steps. A beat the worker
    starts afterwards (an attempt claimed just before the stop) is born stopped, until
    ``worker_started(host)`` says a worker of that name runs again.
    """
    with _beats_lock:
        _stopped_hosts.add(host)
        gone = [k for k, b in _beats.items() if b.host == host]
        beats = [_beats.pop(k) for k in gone]
    for beat in beats:
        with beat.lock:
            beat.stopped = True
            beat.pending_step = _UNSET
    if beats:
        log.warning("stopped the heartbeats of %d process(es) of worker %s", len(beats), host)
    return len(beats)


def worker_started(host: str) -> None:
    """A worker named ``host`` runs (again) in this process: its beats are kept."""
    with _beats_lock:
        _stopped_hosts.discard(host)


def active() -> list[Beat]:
    """The beats being kept now (for tests and diagnostics)."""
    with _beats_lock:
        return list(_beats.values())


def stop_all() -> None:
    """Stop every beat (tests: a fresh start for the next test)."""
    with _beats_lock:
        beats = list(_beats.values())
        _beats.clear()
        _stopped_hosts.clear()
    for beat in beats:
        with beat.lock:
            beat.stopped = True
