"""What the monitor recovered, recorded for the check-status page (``proc_recoveries``).

The process document itself is the truth (its history and errors say what happened); these
records only let the page list the recent recoveries in one query on the ``time`` index.
"""
from __future__ import annotations

import logging
from datetime import datetime

from . import db
from .timeutil import utcnow

log = logging.getLogger(__name__)

RECOVERIES = "proc_recoveries"
"""The collection of recovery records."""

RECOVERY_RECORD_TTL = 7 * 24 * 3600
"""A recovery record is kept this long on a real server (TTL index on ``time``)."""


def record(**fields) -> None:
    """Record one recovery or alert (never raises: the process document already says it)."""
    try:
        db.database()[RECOVERIES].insert_one({"time": utcnow(), **fields})
    except Exception:
        log.exception("could not record the recovery of %s %s", fields.get("kind"), fields.get("id"))


def ensure_indexes() -> None:
    """The index of ``proc_recoveries`` (newest first; expire after RECOVERY_RECORD_TTL)."""
    db.database()[RECOVERIES].create_index("time", expireAfterSeconds=RECOVERY_RECORD_TTL)


def recent_recoveries(limit: int = 50, *, since: datetime | None = None) -> list[dict]:
    """The newest recoveries and alerts (at most ``limit``, none before ``since``), newest first.

    One query on the ``time`` index (for the check-status page).
    """
    query = {} if since is None else {"time": {"$gte": since}}
    return list(db.database()[RECOVERIES].find(query, {"_id": 0}).sort("time", -1).limit(limit))
