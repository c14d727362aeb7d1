"""Time: UTC times as MongoDB stores them (millisecond precision, naive UTC in BSON), ages, and
durations as operators type them, one syntax for the whole CLI and API.

One clock: every time proc writes or compares (heartbeats, history times, deadlines, ages) is
on the database server's clock. ``utcnow()`` is this host's UTC clock plus the offset this
process measured from the server (``proc.store.db.measure_clock``: ``hello``'s ``localTime``,
corrected by half the round trip, refreshed every ``CLOCK_REFRESH`` seconds). The offset is 0
until it was measured, and stays 0 on the embedded database (it lives in this process).

``90s``, ``15m``, ``1h``, ``2d``, or a plain number of seconds (``90``, ``1.5``). A unit is one
letter after the number, with no space; the value is zero or more and at most a hundred years.
Anything else raises ``InvalidDuration`` (a ``ValueError``) saying what was given and what is
accepted.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from .exceptions import ProcError


CLOCK_REFRESH = 60.0
"""Seconds between two measurements of the offset from the database server's clock."""

_clock = {"offset": 0.0, "rtt": None, "measured": None}
"""This process's offset from the server (seconds, server minus local), the round trip of the
measurement it came from, and when it was measured (``time.monotonic()``; None: never)."""


def local_utcnow() -> datetime:
    """This host's own UTC clock (naive, full precision): only for measuring the offset."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def utcnow() -> datetime:
    """Now in UTC on the database server's clock (this host's clock plus the measured offset),
    truncated to milliseconds so it round-trips through BSON unchanged."""
    now = local_utcnow() + timedelta(seconds=_clock["offset"])
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def offset_from(sent: datetime, server_time: datetime, received: datetime) -> float:
    """The offset (seconds, server minus local) of a server that answered ``server_time`` to a
    request sent at local time ``sent`` and answered at local time ``received``: the server read
    its clock, on average, half way through the round trip."""
    midpoint = sent + (received - sent) / 2
    return (server_time - midpoint).total_seconds()


def set_clock_offset(offset: float, rtt: float | None = None, measured: float | None = None) -> None:
    """Record a measured offset (``proc.store.db``; tests)."""
    _clock.update(offset=float(offset), rtt=rtt, measured=measured)


def clock_offset() -> float:
    """This process's measured offset from the database server's clock (seconds; 0 if never)."""
    return _clock["offset"]


def clock() -> dict:
    """The offset, the round trip it was measured with (seconds) and its monotonic time."""
    return dict(_clock)


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


UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)(?P<unit>[smhd]?)")
#: The syntax as the OpenAPI document gives it (``format_duration`` always matches it).
SYNTAX_PATTERN = re.compile(r"(\d+(\.\d+)?|\.\d+)[smhd]?")
SYNTAX = "90s, 15m, 1h, 2d or a plain number of seconds"
MAX_SECONDS = 36500 * 86400.0
"""A hundred years: anything longer is a typo (and past what a date can be shifted by)."""


class InvalidDuration(ProcError, ValueError):
    """A duration is malformed or negative."""


def parse_duration(value, name: str = "duration") -> float:
    """Seconds in ``value`` (a string of the syntax above, or a number of seconds)."""
    if isinstance(value, bool):
        raise InvalidDuration(f"{name} must be a duration ({SYNTAX}), got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip().lower())
        if match is None:
            hint = "; a duration is never negative" if value.strip().startswith("-") else ""
            raise InvalidDuration(f"{name} must be a duration ({SYNTAX}), got {value!r}{hint}")
        seconds = float(match["number"]) * UNITS[match["unit"] or "s"]
    else:
        raise InvalidDuration(f"{name} must be a duration ({SYNTAX}), got {type(value).__name__}")
    if seconds < 0 or not math.isfinite(seconds):
        raise InvalidDuration(f"{name} must be zero or more and finite ({SYNTAX}), got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidDuration(f"{name} is at most 36500d (a hundred years), got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in that syntax, read back by ``parse_duration`` to the microsecond: 3600 ->
    "1h", 90 -> "90s", 0.25 -> "0.25s" (never an exponent)."""
    for unit in ("d", "h", "m"):
        size = UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"
