"""The errors of the datafix framework, each mapped to one exit code by the CLI."""
from __future__ import annotations

from proc.exceptions import ConfigurationError, ProcError


class DatafixError(ProcError):
    """A datafix failed (exit code 1). The ledger records it as failed."""


class Refused(DatafixError):
    """A datafix stopped before writing anything (e.g. documents still processing)."""


class LockHeld(DatafixError):
    """Another run holds the datafix lock (exit code 3)."""


class LockLost(DatafixError):
    """This run's lock expired and another run took it; this run stopped (exit code 1)."""


class ScriptError(ConfigurationError):
    """A datafix file is malformed, duplicated or unknown (exit code 2)."""
