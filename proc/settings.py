"""Per-kind settings: concurrency limit, timeouts and recovery policy.

A kind's settings come from, in increasing priority: the defaults below, the arguments
of ``@process(...)``, and ``PROC_KIND_SETTINGS`` (JSON, kind name -> settings). The
monitor and the check-status page read the same values.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Union

from .exceptions import ConfigurationError
from .names import DEFAULT_QUEUE

RECOVERY_POLICIES = ("fail", "retry", "alert")

Duration = Union[float, Callable[[Any], float]]


@dataclass(frozen=True)
class KindSettings:
    limit: int | None = None
    """At most this many processes of the kind hold a slot (DISPATCHED or RUNNING); None: no limit."""
    queue_timeout: float = 600.0
    """Longest a process may stay PENDING or DISPATCHED before it counts as stuck (s)."""
    expected_duration: Duration = 3600.0
    """Longest a run may take after dispatch (s), or a function of the document returning it."""
    heartbeat_timeout: float = 120.0
    """A RUNNING process whose heartbeat is older than this counts as lost (s)."""
    recovery: str = "retry"
    """What the monitor does with a stuck process: "retry", "fail" or "alert"."""
    max_attempts: int = 3
    """With "retry": attempts in all before the process is failed instead."""
    monitor_interval: float = 60.0
    """How long the per-process monitor waits before checking a still-alive process again (s)."""
    monitor_checks: bool = True
    """Check each process at its deadline without waiting for a sweep: its deadline joins a
    bucket whose one delayed message checks every process of the kind due in it
    (``PROC_CHECK_BUCKET``). False: rely on the periodic sweep alone."""
    tolerate_child_failures: bool = False
    """False: a parent with a failed child ends FAILURE. True: SUCCESS with a warning per failure."""
    queue: str = DEFAULT_QUEUE
    """The Celery queue the kind's messages go to."""

    def __post_init__(self):
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigurationError(f"limit must be a positive integer or None, got {self.limit!r}")
        if self.recovery not in RECOVERY_POLICIES:
            raise ConfigurationError(
                f"recovery must be one of {', '.join(RECOVERY_POLICIES)}, got {self.recovery!r}")
        for name in ("queue_timeout", "heartbeat_timeout", "monitor_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        if not callable(self.expected_duration) and (
                not isinstance(self.expected_duration, (int, float)) or self.expected_duration <= 0):
            raise ConfigurationError(
                f"expected_duration must be positive seconds or a function, got {self.expected_duration!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")

    def expected_seconds(self, doc) -> float:
        """``expected_duration`` for this document."""
        value = self.expected_duration(doc) if callable(self.expected_duration) else self.expected_duration
        return float(value)

    def merged(self, overrides: dict, source: str) -> "KindSettings":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigurationError(f"{source}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **overrides)


DEFAULTS = KindSettings()
