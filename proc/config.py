"""Settings: the process's (``Settings``, ``PROC_*``), read from the environment once and
overridable from Python (tests, shells), and each kind's (``KindSettings``).

Every setting has a documented default here; the README's "Configuration" table lists them.

A kind's settings (concurrency limit, timeouts, recovery policy) come from, in increasing
priority: the defaults of ``KindSettings``, the arguments of ``@process(...)``, and
``PROC_KIND_SETTINGS`` (JSON, kind name -> settings). The monitor and the check-status page
read the same values.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Union

from . import redact
from .exceptions import ConfigurationError
from .names import DEFAULT_QUEUE
from .status import RECOVERY

EMBEDDED_MONGODB_URI = "mongomock://localhost/proc"
"""The embedded database: mongomock, living inside one Python process."""

EMBEDDED_BROKER_URL = "memory://localhost/"
"""The embedded broker: kombu's in-memory transport, for an in-process worker."""


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str = EMBEDDED_MONGODB_URI
    """MONGODB_URI: the database. ``mongomock://`` means the embedded one."""
    broker_url: str = EMBEDDED_BROKER_URL
    """CELERY_BROKER_URL: the Celery broker (Redis in production)."""
    models: tuple[str, ...] = ("proc.demo.models",)
    """PROC_MODELS: comma-separated modules that define the application's Proc subclasses."""
    kind_settings: dict = field(default_factory=dict)
    """PROC_KIND_SETTINGS: JSON object, kind -> per-kind settings (see ``proc.config``)."""
    history_limit: int = 50
    """PROC_HISTORY_LIMIT: transitions kept in a document's ``history`` (newest kept)."""
    messages_limit: int = 100
    """PROC_MESSAGES_LIMIT: entries kept in ``errors`` and in ``warnings`` each."""
    heartbeat_interval: float = 10.0
    """PROC_HEARTBEAT_INTERVAL: seconds between heartbeat writes of a running process."""
    dispatch_timeout: float = 10.0
    """PROC_DISPATCH_TIMEOUT: longest a call waits for the broker before failing."""
    visibility_timeout: int = 3600
    """PROC_VISIBILITY_TIMEOUT: Redis redelivers an unacknowledged message after this."""
    consumer_timeout: float = 1800.0
    """PROC_CONSUMER_TIMEOUT: RabbitMQ's ``consumer_timeout`` (in seconds, as the broker is
    configured; 1800 is RabbitMQ's default): the monitor's delayed checks, held unacknowledged by
    a worker until due, are capped at half of it (a client cannot read the broker's value)."""
    db_outage_timeout: float = 60.0
    """PROC_DB_OUTAGE_TIMEOUT: how long a worker retries the writes a process's outcome depends
    on (its claim, its final status) while MongoDB is away; below every heartbeat_timeout."""
    db_socket_timeout: float = 30.0
    """PROC_DB_SOCKET_TIMEOUT: longest one database operation waits for the server's reply (s).
    A link cut without a word (packets lost) would otherwise hold a call for the kernel's TCP
    timeout (about 15 min); after it the call fails as an outage (retried where proc retries).
    A ``socketTimeoutMS`` in MONGODB_URI wins."""
    lease: float | None = None
    """PROC_LEASE: a worker whose heartbeat the database has not accepted for this long stops the
    attempt's code (self-fencing, ``proc.run.heartbeat``). Default: PROC_DB_OUTAGE_TIMEOUT (at
    least that, so a restart shorter than it costs nothing; below every heartbeat_timeout minus
    one heartbeat interval and PROC_CLOCK_MARGIN, so the code stops before the monitor sends
    the process again). 0 turns self-fencing off."""
    clock_margin: float = 1.0
    """PROC_CLOCK_MARGIN: seconds kept between a worker's lease and a kind's heartbeat_timeout
    for the error of the clock offset and the stop of the code."""
    check_bucket: float = 5.0
    """PROC_CHECK_BUCKET: width (s) of the deadline buckets the monitor checks together: one
    delayed message per kind and bucket instead of one per process."""
    sweep_interval: float = 60.0
    """PROC_SWEEP_INTERVAL: seconds between two sweeps of the monitor (Celery beat, procctl monitor)."""
    cancel_grace: float = 30.0
    """PROC_CANCEL_GRACE: seconds a forced cancel (``terminate``) leaves the code to stop on its
    own before its pool process is terminated."""
    api_token: str | None = None
    """PROC_API_TOKEN: when set, the HTTP API and page require it."""
    bulk_limit: int = 10000
    """PROC_BULK_LIMIT: at most this many processes per bulk action (``proc.ops.bulk``)."""
    datafix_check_timeout: float = 2.0
    """PROC_DATAFIX_CHECK_TIMEOUT: longest (s) the startup check of workers and servers spends,
    all its reads together, on searching for documents a datafix migrates (a search that finds
    none reads the whole collection). A datafix the ledger records as done starts anyway when
    the time runs out (with a warning); one it has no record of refuses, naming
    ``procctl datafix upgrade``."""
    bucket_flush: float = 5.0
    """PROC_BUCKET_FLUSH: seconds between two flushes of a process's counts of ended attempts
    into the time buckets (``proc.machine.tally``): what a killed process can lose."""

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get("MONGODB_URI"):
            values["mongodb_uri"] = env["MONGODB_URI"]
        if env.get("CELERY_BROKER_URL"):
            values["broker_url"] = env["CELERY_BROKER_URL"]
        if env.get("PROC_MODELS"):
            values["models"] = tuple(m.strip() for m in env["PROC_MODELS"].split(",") if m.strip())
        if env.get("PROC_KIND_SETTINGS"):
            try:
                values["kind_settings"] = json.loads(env["PROC_KIND_SETTINGS"])
            except ValueError as exc:
                raise ConfigurationError(
                    f"PROC_KIND_SETTINGS is not valid JSON ({exc}); expected e.g. "
                    '\'{"precheck.run": {"limit": 4}}\''
                ) from None
            if not isinstance(values["kind_settings"], dict):
                raise ConfigurationError("PROC_KIND_SETTINGS must be a JSON object: kind -> settings")
        for name, var, conv in (
            ("history_limit", "PROC_HISTORY_LIMIT", int),
            ("messages_limit", "PROC_MESSAGES_LIMIT", int),
            ("heartbeat_interval", "PROC_HEARTBEAT_INTERVAL", float),
            ("dispatch_timeout", "PROC_DISPATCH_TIMEOUT", float),
            ("visibility_timeout", "PROC_VISIBILITY_TIMEOUT", int),
            ("consumer_timeout", "PROC_CONSUMER_TIMEOUT", float),
            ("db_outage_timeout", "PROC_DB_OUTAGE_TIMEOUT", float),
            ("sweep_interval", "PROC_SWEEP_INTERVAL", float),
            ("check_bucket", "PROC_CHECK_BUCKET", float),
            ("cancel_grace", "PROC_CANCEL_GRACE", float),
            ("bulk_limit", "PROC_BULK_LIMIT", int),
            ("bucket_flush", "PROC_BUCKET_FLUSH", float),
            ("clock_margin", "PROC_CLOCK_MARGIN", float),
            ("db_socket_timeout", "PROC_DB_SOCKET_TIMEOUT", float),
            ("datafix_check_timeout", "PROC_DATAFIX_CHECK_TIMEOUT", float),
        ):
            if env.get(var):
                try:
                    values[name] = conv(env[var])
                except ValueError:
                    raise ConfigurationError(f"{var}={env[var]!r} is not a number") from None
                if not values[name] > 0 or values[name] == float("inf"):
                    raise ConfigurationError(f"{var} must be positive, got {env[var]!r}")
        if env.get("PROC_LEASE"):
            try:
                values["lease"] = float(env["PROC_LEASE"])
            except ValueError:
                raise ConfigurationError(f"PROC_LEASE={env['PROC_LEASE']!r} is not a number") from None
            if not 0 <= values["lease"] < float("inf"):
                raise ConfigurationError(f"PROC_LEASE must be 0 (self-fencing off) or positive, "
                                         f"got {env['PROC_LEASE']!r}")
        if env.get("PROC_API_TOKEN"):
            values["api_token"] = env["PROC_API_TOKEN"]
        return cls(**values)

    @property
    def effective_lease(self) -> float:
        """The lease in seconds (PROC_LEASE, else PROC_DB_OUTAGE_TIMEOUT); 0: self-fencing off."""
        return self.db_outage_timeout if self.lease is None else self.lease

    @property
    def embedded_db(self) -> bool:
        return self.mongodb_uri.startswith("mongomock://")



_settings: Settings | None = None


def get() -> Settings:
    """The settings in force (read from the environment on first use)."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
        redact.remember(_settings.mongodb_uri, _settings.broker_url)
    return _settings


def configure(**overrides) -> Settings:
    """Replace some settings (names as in ``Settings``); returns the new settings."""
    global _settings
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    _settings = replace(get(), **overrides)
    redact.remember(_settings.mongodb_uri, _settings.broker_url)
    return _settings


def reset() -> None:
    """Forget overrides: the next ``get()`` reads the environment again."""
    global _settings
    _settings = None


# -- per-kind settings ---------------------------------------------------------------------

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
        if self.recovery not in RECOVERY:  # a policy is a row of the recovery table
            raise ConfigurationError(
                f"recovery must be one of {', '.join(RECOVERY)}, got {self.recovery!r}")
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
