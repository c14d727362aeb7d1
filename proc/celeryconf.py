"""Deprecated: moved to ``proc.messaging`` (task and queue names to ``proc.names``).

Kept for one release so existing imports keep working; importing it warns.
"""
import warnings

from .messaging import (  # noqa: F401
    DEFAULT_QUEUE,
    MONITOR_QUEUE,
    TASK_MODULES,
    beat_schedule,
    get_app,
    make_app,
    max_countdown,
    publish_retry_policy,
    set_app,
)

warnings.warn("proc.celeryconf is deprecated: use proc.messaging (names in proc.names)",
              DeprecationWarning, stacklevel=2)
