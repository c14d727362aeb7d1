"""The JSON API under /api/ (described by /api/openapi.json)."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from proc.ops import admin
from proc.exceptions import IllegalTransition, ProcError, ProcessHealthy, TransitionConflict, UnknownKind

from . import listing, openapi, overview, queries
from .errors import ApiError, bad_parameter

bp = Blueprint("api", __name__, url_prefix="/api")

ACTIONS = {"reset": admin.reset, "redispatch": admin.redispatch, "cancel": admin.cancel}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def flag(name: str, default: bool) -> bool:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise bad_parameter(name, f"{name} must be true or false, got {value!r}")


def status_data(workers: bool = True) -> dict:
    config = current_app.config
    return overview.build_status(inspect_timeout=float(config["PROC_INSPECT_TIMEOUT"]),
                                 attention_limit=int(config["PROC_ATTENTION_LIMIT"]), workers=workers,
                                 recovery_hours=float(config["PROC_RECOVERY_HOURS"]),
                                 recovery_limit=int(config["PROC_RECOVERY_LIMIT"]))


@bp.get("/status")
def status():
    return jsonify(status_data(workers=flag("workers", True)))


@bp.get("/procs")
def procs():
    args = request.args
    return jsonify(listing.list_procs(
        listing.filter_from_args(args), sort=args.get("sort"), cursor=args.get("cursor"),
        limit=listing.parse_limit(args.get("limit"), int(current_app.config["PROC_PAGE_SIZE"]))))


@bp.get("/procs/<collection>/<id>")
def proc_detail(collection, id):
    return jsonify(queries.detail(collection, id))


@bp.post("/procs/<collection>/<id>/<action>")
def proc_action(collection, id, action):
    if action not in ACTIONS:
        raise ApiError(404, f"unknown action {action!r}; actions: {', '.join(ACTIONS)}", "action")
    if action == "cancel":
        kwargs = {"terminate": flag("terminate", False)}
    elif request.args.get("terminate") not in (None, ""):
        raise bad_parameter("terminate", "terminate applies to cancel only; reset and redispatch "
                                         "take force")
    else:
        kwargs = {"force": flag("force", False)}
    cls, raw = queries.find_proc(collection, id)
    try:
        stops = ACTIONS[action](collection, raw["_id"], by=g.actor, **kwargs).stops
    except (ProcessHealthy, IllegalTransition, TransitionConflict) as exc:
        raise ApiError(409, str(exc)) from None
    except (UnknownKind, LookupError) as exc:
        raise ApiError(404, str(exc)) from None
    except ProcError as exc:
        raise ApiError(409, str(exc)) from None
    answer = {"action": action, "by": g.actor, "process": queries.detail(collection, id)}
    if action == "cancel" and kwargs["terminate"]:  # accepted: the stop happens later, on a worker
        return jsonify({**answer, "terminate": [plan.to_dict() for plan in stops]}), 202
    return jsonify(answer)


@bp.get("/openapi.json")
def openapi_spec():
    return jsonify(openapi.spec())
