"""proc: MongoDB-tracked processes that run on Celery workers.

    from proc import Proc, ProcessStatus, process, ProcessAlreadyRunning
"""
from .document import Proc
from .exceptions import (
    BrokerUnavailable,
    ConfigurationError,
    DatabaseUnavailable,
    IllegalTransition,
    ProcError,
    ProcessAlreadyRunning,
    ProcessCancelled,
    ProcessFailure,
    TransitionConflict,
    UnknownKind,
)
from .process import process
from .config import KindSettings
from .status import COMPLETED, NOT_PROCESSING, PROCESSING, ProcessStatus

__all__ = [
    "BrokerUnavailable",
    "COMPLETED",
    "ConfigurationError",
    "DatabaseUnavailable",
    "IllegalTransition",
    "KindSettings",
    "NOT_PROCESSING",
    "PROCESSING",
    "Proc",
    "ProcError",
    "ProcessAlreadyRunning",
    "ProcessCancelled",
    "ProcessFailure",
    "ProcessStatus",
    "TransitionConflict",
    "UnknownKind",
    "process",
]
