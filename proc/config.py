"""Settings, read from the environment once and overridable from Python (tests, shells).

Every setting has a documented default here; the README's "Configuration" table lists them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace

from .exceptions import ConfigurationError

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
    """PROC_KIND_SETTINGS: JSON object, kind -> per-kind settings (see ``proc.settings``)."""
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
    db_outage_timeout: float = 60.0
    """PROC_DB_OUTAGE_TIMEOUT: how long a worker retries the writes a process's outcome depends
    on (its claim, its final status) while MongoDB is away; below every heartbeat_timeout."""
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
    """PROC_BULK_LIMIT: at most this many processes per bulk action (``proc.bulk``)."""

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
            ("db_outage_timeout", "PROC_DB_OUTAGE_TIMEOUT", float),
            ("sweep_interval", "PROC_SWEEP_INTERVAL", float),
            ("check_bucket", "PROC_CHECK_BUCKET", float),
            ("cancel_grace", "PROC_CANCEL_GRACE", float),
            ("bulk_limit", "PROC_BULK_LIMIT", int),
        ):
            if env.get(var):
                try:
                    values[name] = conv(env[var])
                except ValueError:
                    raise ConfigurationError(f"{var}={env[var]!r} is not a number") from None
                if not values[name] > 0 or values[name] == float("inf"):
                    raise ConfigurationError(f"{var} must be positive, got {env[var]!r}")
        if env.get("PROC_API_TOKEN"):
            values["api_token"] = env["PROC_API_TOKEN"]
        return cls(**values)

    @property
    def embedded_db(self) -> bool:
        return self.mongodb_uri.startswith("mongomock://")



_settings: Settings | None = None


def get() -> Settings:
    """The settings in force (read from the environment on first use)."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def configure(**overrides) -> Settings:
    """Replace some settings (names as in ``Settings``); returns the new settings."""
    global _settings
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    _settings = replace(get(), **overrides)
    return _settings


def reset() -> None:
    """Forget overrides: the next ``get()`` reads the environment again."""
    global _settings
    _settings = None
