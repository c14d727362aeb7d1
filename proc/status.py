"""The statuses of a process and their named groups.

Stored in MongoDB as exactly these strings; ``ProcessStatus.RUNNING == "RUNNING"``.
"""
from __future__ import annotations

from enum import Enum


class ProcessStatus(str, Enum):
    """The life of one process, in lifecycle order."""

    READY = "READY"
    """Never called, or reset: a process may be started."""
    PENDING = "PENDING"
    """Requested, not yet handed to the broker (e.g. held by a concurrency limit)."""
    DISPATCHED = "DISPATCHED"
    """The broker accepted the Celery message; no worker has started it yet."""
    RUNNING = "RUNNING"
    """A worker claimed it and runs the process method (or its join)."""
    WAITING_FOR_RESULT = "WAITING_FOR_RESULT"
    """Waits for its child processes; its join runs when the last one finishes."""
    SUCCESS = "SUCCESS"
    """The last process ended well."""
    FAILURE = "FAILURE"
    """The last process ended with errors (see ``errors``)."""

    def __str__(self) -> str:  # "RUNNING", not "ProcessStatus.RUNNING"
        return self.value

    @classmethod
    def parse(cls, value: str) -> "ProcessStatus":
        """Return the status named ``value`` or raise ``ValueError`` naming the valid ones."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown process status {value!r}; valid: {valid}") from None


#: Every status, in lifecycle order (the order of the boxes on the status page).
LIFECYCLE = tuple(ProcessStatus)

#: A process in one of these is under way: no new process may start on its document.
PROCESSING = frozenset(
    {
        ProcessStatus.PENDING,
        ProcessStatus.DISPATCHED,
        ProcessStatus.RUNNING,
        ProcessStatus.WAITING_FOR_RESULT,
    }
)

#: A new process may start on a document in one of these.
NOT_PROCESSING = frozenset({ProcessStatus.READY, ProcessStatus.SUCCESS, ProcessStatus.FAILURE})

#: How a process ended.
COMPLETED = frozenset({ProcessStatus.SUCCESS, ProcessStatus.FAILURE})

#: Plain string values, for queries.
VALUES = tuple(s.value for s in LIFECYCLE)
PROCESSING_VALUES = tuple(s.value for s in LIFECYCLE if s in PROCESSING)
