"""``GET /api/timings``: where time goes, per kind and phase, over a window (``proc.monitor.timings``)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from proc import registry
from proc.machine import tally
from proc.monitor import timings
from proc.timeutil import utcnow
from proc.ops.filters import FilterError, from_options

from .errors import bad_parameter, whole_number

bp = Blueprint("timings", __name__, url_prefix="/api")

DEFAULT_WINDOW = 3600
MAX_WINDOW = tally.RETENTION


def parse_window(value: str | None) -> int:
    """``window``: whole seconds, from 1 to the buckets' retention, 30 days (default one hour)."""
    return whole_number("window", value, default=DEFAULT_WINDOW, high=MAX_WINDOW,
                        what="a whole number of seconds",
                        high_means=" (30 days: the retention of the time buckets it is read from)")


def parse_kind(value: str | None) -> tuple[type, str | None] | None:
    """``kind`` as every filter takes it (``collection`` or ``collection.method``, checked by
    ``proc.ops.filters``) -> (class, method or None); 400 naming ``kind``."""
    try:
        name = from_options(kind=value or None).kind
    except FilterError as exc:
        raise bad_parameter(exc.field, str(exc)) from None
    if name is None:
        return None
    if "." in name:
        kind = registry.kind_named(name)
        return kind.cls, kind.method
    return registry.class_for(name), None


def timings_data(window: int, kind: str | None = None) -> dict:
    """The answer: ``since`` is the window's start as read (rounded down to its bucket)."""
    now = utcnow()
    return {"window_seconds": window, "since": timings.since(window, now).isoformat() + "Z",
            "bucket_seconds": timings.width_for(window), "kinds": timings.summary(window, parse_kind(kind), now=now)}


@bp.get("/timings")
def get_timings():
    args = request.args
    return jsonify(timings_data(parse_window(args.get("window")), args.get("kind")))
