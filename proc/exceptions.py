"""Every error proc raises, rooted at ``ProcError``."""
from __future__ import annotations


class ProcError(Exception):
    """Root of proc's errors."""


class ConfigurationError(ProcError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class ProcessAlreadyRunning(ProcError):
    """A process was called on a document that is already processing."""


class IllegalTransition(ProcError, ValueError):
    """The state machine does not allow this change of status."""


class TransitionConflict(ProcError):
    """A conditional status write found the document in another state or attempt.

    Nothing was written: another writer (a racing worker, a newer attempt, an admin
    action) got there first.
    """


class DatabaseUnavailable(ProcError):
    """MongoDB did not answer in time (it is down, restarting, or electing a primary).

    Raised to a caller whose call could not be recorded: nothing was written, so the call
    can simply be made again once the database is back.
    """


class ClaimNotWritten(DatabaseUnavailable):
    """A worker took a ``proc.run`` message but could not write its claim: the database did
    not answer from this worker for ``PROC_DB_OUTAGE_TIMEOUT``. Nothing ran; the task hands
    the message back to the broker, for a worker that can reach the database."""


class BrokerUnavailable(ProcError):
    """The broker did not accept a message in time. The process stays PENDING."""


class UnknownKind(ProcError, LookupError):
    """No Proc subclass or process method of that name is known (see PROC_MODELS)."""


class ProcessFailure(ProcError):
    """Raise inside a process method to fail it with these error messages."""

    def __init__(self, *errors: str):
        super().__init__("; ".join(errors) or "process failed")
        self.errors = list(errors) or ["process failed"]


class ProcessEndedFailure(ProcError):
    """Raised by the Celery task ``proc.run`` after it wrote FAILURE, so that Celery (its
    ``task-failed`` event, Flower, celery-exporter) counts the task as failed, with proc's
    errors as the message. Its message is acknowledged like any other; Celery never retries it."""


class ProcessHealthy(ProcError):
    """An admin action that is only for stuck or failed processes was asked of a healthy one."""


class ProcessCancelled(BaseException):
    """Raised in a running process method by its next ``set_step()`` once the process was
    cancelled. Derives from ``BaseException`` (as ``asyncio.CancelledError`` does) so that
    ``except Exception`` in user code does not swallow it; ``finally`` blocks still run."""
