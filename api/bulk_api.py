"""``POST /api/procs/bulk`` (a bulk action, or its dry run) and ``GET /api/bulk-actions``.

The body is a JSON object: ``action`` (reset, redispatch, cancel), ``filter`` (the keys of
``proc.ops.filters``), ``dry_run`` and ``force`` (booleans, default false). Any other key, a
body that is not a JSON object, or a malformed value answers 400 naming the field, and
nothing is written. The POST goes through the same cross-site checks as every other POST
(``api.auth``).
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from proc.ops import bulk
from proc.ops.filters import Filter
from proc.timeutil import utcnow

from . import bodies
from .errors import bad_parameter, whole_number
from .overview import iso
from .queries import summary

bp = Blueprint("bulk_api", __name__, url_prefix="/api")

BODY_KEYS = ("action", "filter", "dry_run", "force")
MAX_RECENT = 200


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_parameter(name, f"{name} must be true or false, got {value!r}")
    return value


def parse_body() -> tuple[str, Filter, bool, bool]:
    body = bodies.json_object('{"action": "reset" | "redispatch" | "cancel", "filter": {...}, '
                              '"dry_run": true, "force": false}')
    unknown = sorted(str(k) for k in body if k not in BODY_KEYS)
    if unknown:
        raise bad_parameter(unknown[0], f"unknown key {unknown[0]!r}; keys: {', '.join(BODY_KEYS)}")
    dry_run, force = _flag(body, "dry_run"), _flag(body, "force")
    try:
        action = bulk.check_action(body.get("action"))
        return action, bulk.parse_filter(body.get("filter")), dry_run, force
    except bulk.BulkError as exc:
        raise bad_parameter(exc.field, str(exc)) from None


@bp.post("/procs/bulk")
def procs_bulk():
    action, filter, dry_run, force = parse_body()
    limit = int(current_app.config["PROC_BULK_LIMIT"])
    try:
        if dry_run:
            answer = bulk.plan(action, filter, force=force, limit=limit).dry_run()
            now = utcnow()
            answer["sample"] = [summary(collection, raw, now) for collection, raw in answer["sample"]]
            return jsonify(answer)
        return jsonify(bulk.run(action, filter, by=g.actor, force=force, limit=limit).as_dict())
    except bulk.BulkError as exc:
        raise bad_parameter(exc.field, str(exc)) from None


@bp.get("/bulk-actions")
def bulk_actions():
    limit = whole_number("limit", request.args.get("limit"), default=50, high=MAX_RECENT)
    return jsonify({"items": [record(r) for r in bulk.recent(limit)]})


def record(raw: dict) -> dict:
    return {"id": str(raw["_id"]), "time": iso(raw.get("time")), "action": raw.get("action"),
            "filter": raw.get("filter") or {}, "force": bool(raw.get("force")), "by": raw.get("by"),
            "matched": raw.get("matched", 0), "changed": raw.get("changed", 0),
            "skipped": raw.get("skipped", 0), "seconds": raw.get("seconds")}
