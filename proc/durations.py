"""Durations as operators type them, one syntax for the whole CLI and API.

``90s``, ``15m``, ``1h``, ``2d``, or a plain number of seconds (``90``, ``1.5``). A unit is one
letter after the number, with no space; the value is zero or more and at most a hundred years. Anything else
raises ``InvalidDuration`` (a ``ValueError``) saying what was given and what is accepted.
"""
from __future__ import annotations

import math
import re

from .exceptions import ProcError

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
