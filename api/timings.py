"""``GET /api/timings``: where time goes, per kind and phase, over a window (``proc.timings``)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from proc import registry, timings
from proc.filters import FilterError, from_options

from .errors import bad_parameter, whole_number

bp = Blueprint("timings", __name__, url_prefix="/api")

DEFAULT_WINDOW = 3600
MAX_WINDOW = 30 * 24 * 3600


def parse_window(value: str | None) -> int:
    """``window``: whole seconds, from 1 to 30 days (default one hour)."""
    return whole_number("window", value, default=DEFAULT_WINDOW, high=MAX_WINDOW,
                        what="a whole number of seconds", high_means=" (30 days)")


def parse_kind(value: str | None) -> tuple[type, str | None] | None:
    """``kind`` as every filter takes it (``collection`` or ``collection.method``, checked by
    ``proc.filters``) -> (class, method or None); 400 naming ``kind``."""
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
    return {"window_seconds": window, "kinds": timings.summary(window, parse_kind(kind))}


@bp.get("/timings")
def get_timings():
    args = request.args
    return jsonify(timings_data(parse_window(args.get("window")), args.get("kind")))
