"""One computation shared by every request of one web process for a while: the page's live
data (per refresh interval) and the ``/metrics`` collection (per ``PROC_METRICS_SECONDS``).

``once_per(key, ttl, compute)`` answers the value computed less than ``ttl`` seconds ago, or
computes it. One lock per key: requests that arrive while it is computed wait for that
computation and share it, so N browsers or N concurrent scrapes cost one computation per
interval, not N. ``ttl`` 0 computes on every call. The values live in the Flask app
(``current_app.extensions``), so each app (each test's) has its own.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from flask import current_app

T = TypeVar("T")
_guard = threading.Lock()


def once_per(key: str, ttl: float, compute: Callable[[], T]) -> T:
    """The value of ``compute()`` for ``key``, at most ``ttl`` seconds old."""
    with _guard:
        store = current_app.extensions.setdefault("proc_shared", {})
        entry = store.setdefault(key, {"lock": threading.Lock(), "at": None, "value": None})
    with entry["lock"]:
        if entry["at"] is not None and ttl > 0 and time.monotonic() - entry["at"] < ttl:
            return entry["value"]
        value = compute()
        entry["at"], entry["value"] = time.monotonic(), value
        return value
