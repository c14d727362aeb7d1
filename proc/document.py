"""``Proc``: the abstract mongoengine document whose ``process_status`` tracks a job's life."""
from __future__ import annotations

import time

from mongoengine import (
    DateTimeField,
    DictField,
    Document,
    IntField,
    ListField,
    StringField,
)

from . import machine, registry
from .run import dispatch, heartbeat
from .store import db
from .exceptions import IllegalTransition
from .machine import Attempt
from .status import COMPLETED, PROCESSING, VALUES, ProcessStatus
from .timeutil import age_seconds, format_age, utcnow

#: Fields only the state machine writes once a document is saved.
MACHINE_FIELDS = frozenset({"process_status", "attempt", "history", "last_status_change", "complete_time",
                            "phases"})


class Proc(Document):
    """Base of every processing document. Each subclass is its own collection.

    Declare process methods with ``@process``; calling one runs it on a Celery worker
    while ``process_status`` shows where it is. See ``proc.process``.
    """

    meta = {
        "abstract": True,
        "indexes": [
            ("process_status", "last_status_change"),
            ("process_status", "current_process"),
            ("process_status", "heartbeat"),
            ("process_status", "deadline"),
            {"fields": ("parent_key", "process_status"), "sparse": True},
            ("-last_status_change", "-_id"),  # /api/procs: newest first, cursor paging
            ("process_status", "complete_time"),  # proc.monitor.timings: the processes ended in a window
        ],
    }

    process_status = StringField(default=ProcessStatus.READY.value, choices=VALUES, required=True)
    current_process = StringField()
    current_process_step = StringField()
    process_args = DictField()
    errors = ListField(StringField())
    warnings = ListField(StringField())
    celery_task_id = StringField()
    worker_hostname = StringField()
    worker_pool = StringField()
    """The Celery pool that claimed the attempt (prefork, threads, solo, ...)."""
    worker_pid = IntField()
    """The pid of the process that runs the attempt's method."""
    worker_pid_start = IntField()
    """When that process started (clock ticks since boot): a reused pid is not taken for it."""
    attempt = IntField(default=0, min_value=0)
    """The fencing token: 1, 2, ... grows with every new attempt, and every status write is
    conditional on it. Hand ``self.attempt`` to side effects outside proc (a file name, a row
    version, an idempotency key) and let them refuse a smaller one: a copy that was cut off
    (its lease lost) or paused and then resumed can change nothing there either."""
    create_time = DateTimeField(default=utcnow)
    last_status_change = DateTimeField(default=utcnow)
    complete_time = DateTimeField()
    phases = DictField()
    """Seconds the last ended attempt spent held, queued, run and waiting (``proc.machine.phases``)."""
    heartbeat = DateTimeField()
    deadline = DateTimeField()
    history = ListField(DictField())
    parent = DictField()
    parent_key = StringField()
    child_collections = ListField(StringField())

    # -- connection -------------------------------------------------------------------

    @classmethod
    def _get_collection(cls):
        """The collection on this process's connection: connects on first use (``MONGODB_URI``)
        and anew in a process forked from the one that connected (``proc.store.db``)."""
        db.database()
        return super()._get_collection()

    # -- identity ---------------------------------------------------------------------

    @classmethod
    def collection_name(cls) -> str:
        return cls._get_collection_name()

    @property
    def status(self) -> ProcessStatus:
        return ProcessStatus(self.process_status)

    @property
    def process_running(self) -> bool:
        """True while a process is under way (PENDING ... WAITING_FOR_RESULT)."""
        return self.status in PROCESSING

    @property
    def completed(self) -> bool:
        return self.status in COMPLETED

    # -- persistence ------------------------------------------------------------------

    def save(self, *args, **kwargs):
        """Save; a saved document's status changes only through the state machine."""
        if self.pk is not None and not self._created:
            touched = MACHINE_FIELDS.intersection(self._get_changed_fields())
            if touched:
                raise IllegalTransition(
                    f"{', '.join(sorted(touched))} of a saved {type(self).__name__} change only "
                    "through the state machine (call a process method, or use proc.ops.admin "
                    "reset/redispatch/cancel)"
                )
        return super().save(*args, **kwargs)

    def reload_status(self) -> "Proc":
        """Re-read the machine-owned and progress fields from the database."""
        return self.reload(*MACHINE_FIELDS, "current_process", "current_process_step", "errors",
                           "warnings", "celery_task_id", "worker_hostname", "worker_pool", "worker_pid",
                           "worker_pid_start", "heartbeat", "deadline", "child_collections")

    def _apply_raw(self, raw: dict) -> None:
        """Take the values a status write returned (raw MongoDB fields), without marking changes."""
        by_db_field = self._reverse_db_field_map
        for key, value in raw.items():
            name = by_db_field.get(key, key)
            field = self._fields.get(name)
            if field is not None:
                self._data[name] = None if value is None else field.to_python(value)

    # -- progress -----------------------------------------------------------------------

    def set_step(self, step: str | None) -> None:
        """Say what the process is doing now (free text in ``current_process_step``).

        Inside a worker the write is folded into the heartbeat (at most one write per
        heartbeat interval); outside one it is written at once, only for this attempt.
        Inside a worker, once the process was cancelled, raises ``ProcessCancelled``.
        """
        self._data["current_process_step"] = step
        if not heartbeat.touch(self, step):
            machine.update_fields(Attempt.of_doc(self), statuses=PROCESSING,
                                  fields={"current_process_step": step})

    def cancel_requested(self) -> bool:
        """Whether this attempt was cancelled: for a long loop that reports no step. Inside
        the worker it asks the heartbeat (no database read); elsewhere it reads the document."""
        beat = heartbeat.current()
        if beat is not None and beat.attempt.id == self.pk and beat.attempt.number == self.attempt:
            return beat.cancelled is not None or beat.lease_lost is not None
        return heartbeat.cancelled_by(Attempt.of_doc(self)) is not None

    def warn(self, message: str) -> None:
        """Record a warning on this process (kept in ``warnings``, newest N)."""
        self.warnings.append(str(message))
        machine.update_fields(Attempt.of_doc(self), statuses=PROCESSING, warnings=[message])

    # -- children -----------------------------------------------------------------------

    def spawn(self, bound_process, *args, **kwargs):
        """Start ``child.some_process(*args)`` as a child of this running process.

        The parent shows WAITING_FOR_RESULT after its method returns until the last child
        finishes; then its join runs once (see ``@process(join=...)``).
        """
        return dispatch.spawn(self, bound_process, args, kwargs)

    # -- waiting --------------------------------------------------------------------------

    def block_until_complete(self, timeout: float = 60.0, interval: float = 0.05) -> "Proc":
        """Wait until the current process has finished (SUCCESS or FAILURE) and return self,
        fully reloaded. Raises ``TimeoutError`` with the status it was stuck in after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.reload_status()
            if not self.process_running:
                return self.reload()
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{type(self).__name__} {self.pk} still {self.process_status} after {timeout:g} s "
                    f"(step: {self.current_process_step!r})"
                )
            time.sleep(interval)

    # -- shell inspection -----------------------------------------------------------------

    def __repr__(self) -> str:
        step = f" step={self.current_process_step!r}" if self.current_process_step else ""
        proc = f" {self.current_process}" if self.current_process else ""
        return (f"<{type(self).__name__} {self.pk} {self.process_status}{proc}{step} "
                f"attempt={self.attempt} for {format_age(age_seconds(self.last_status_change))}>")

    __str__ = __repr__

    def describe(self, transitions: int = 10) -> str:
        """A readable summary: status, step, age in state, worker, errors, last transitions."""
        lines = [
            f"{type(self).__name__} {self.pk} (collection {self.collection_name()})",
            f"  status:    {self.process_status} for {format_age(age_seconds(self.last_status_change))}"
            f" (attempt {self.attempt})",
            f"  process:   {self.current_process or '-'}",
            f"  step:      {self.current_process_step or '-'}",
            f"  worker:    {self.worker_hostname or '-'}  task {self.celery_task_id or '-'}",
            f"  heartbeat: {format_age(age_seconds(self.heartbeat)) + ' ago' if self.heartbeat else '-'}",
        ]
        if self.parent:
            lines.append(f"  parent:    {self.parent.get('collection')}/{self.parent.get('id')}")
        for label, items in (("errors", self.errors), ("warnings", self.warnings)):
            lines.append(f"  {label}:" + ("" if items else "    none"))
            lines.extend(f"    - {item}" for item in items[-5:])
        lines.append("  history (newest last):")
        for h in (self.history or [])[-transitions:]:
            when = h.get("time").isoformat(timespec="seconds") if h.get("time") else "?"
            extra = "".join(f" {k}={h[k]}" for k in ("host", "by") if h.get(k))
            note = f" - {h['note']}" if h.get("note") else ""
            lines.append(f"    {when}Z {h.get('status'):<18} #{h.get('attempt')} {h.get('event', '')}{extra}{note}")
        return "\n".join(lines)


registry.register_base(Proc)
