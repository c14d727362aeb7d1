"""UTC times, as MongoDB stores them (millisecond precision, naive UTC in BSON)."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Now in UTC, truncated to milliseconds so it round-trips through BSON unchanged."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def age_seconds(since: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds from ``since`` (naive UTC) to ``now``; None when ``since`` is None."""
    if since is None:
        return None
    if since.tzinfo is not None:
        since = since.astimezone(timezone.utc).replace(tzinfo=None)
    return ((now or utcnow()) - since).total_seconds()


def format_age(seconds: float | None) -> str:
    """``75.2`` -> ``"1m 15s"``; None -> ``"-"``."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
