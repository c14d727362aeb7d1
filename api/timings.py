"""``GET /api/timings``: where time goes, per kind and phase, over a window (``proc.timings``)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from proc import timings

from . import queries
from .errors import bad_parameter

bp = Blueprint("timings", __name__, url_prefix="/api")

DEFAULT_WINDOW = 3600
MAX_WINDOW = 30 * 24 * 3600


def parse_window(value: str | None) -> int:
    """``window``: whole seconds, from 1 to 30 days (default one hour)."""
    if value in (None, ""):
        return DEFAULT_WINDOW
    fix = f"window must be a whole number of seconds from 1 to {MAX_WINDOW} (30 days)"
    try:
        window = int(value)
    except ValueError:
        raise bad_parameter("window", f"{fix}, got {value!r}") from None
    if not 1 <= window <= MAX_WINDOW:
        raise bad_parameter("window", f"{fix}, got {window}")
    return window


def timings_data(window: int, kind: str | None = None) -> dict:
    return {"window_seconds": window,
            "kinds": timings.summary(window, queries.parse_kind(kind))}


@bp.get("/timings")
def get_timings():
    args = request.args
    return jsonify(timings_data(parse_window(args.get("window")), args.get("kind")))
