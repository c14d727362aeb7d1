"""Replace tasks / current_task / tasks_status by process_status / current_process_step.

Datafix id: 0001
Created:    2025-06-02

The previous version stored, in every Proc collection, ``tasks`` (list of str),
``current_task`` (str or null) and ``tasks_status`` (CREATED, PENDING, RUNNING, SUCCESS,
FAILURE), and often an old ``process_status`` (CALLED, RUNNING, COMPLETED or null).

upgrade: ``process_status`` from ``tasks_status`` (CREATED -> READY, SUCCESS -> SUCCESS,
FAILURE -> FAILURE; with ``--include-processing`` PENDING/RUNNING -> FAILURE plus an error
saying the run was interrupted by the upgrade, appended to ``errors``; an ``errors`` that is
not an array, e.g. a string, is kept as the list's first element), ``current_process_step``
= ``current_task``,
the three old fields removed, every other field kept. Without ``--include-processing`` a
PENDING/RUNNING document stops the run before anything is written. Documents whose
``tasks_status`` is unknown, of the wrong type or missing are reported and left alone.

downgrade: documents still as the upgrade left them get their backed-up values back;
others (no backup, or changed since) are converted by the inverse rule and reported.

The status values are frozen here as they were when this datafix was written: a later
change to ``proc.status`` must not change what this datafix does.
"""

revision = "0001"
description = "tasks/current_task/tasks_status -> process_status/current_process_step"

LEGACY_FIELDS = ("tasks", "current_task", "tasks_status")
#: Old tasks_status -> process_status, for documents no worker is processing.
IDLE_MAP = {"CREATED": "READY", "SUCCESS": "SUCCESS", "FAILURE": "FAILURE"}
#: Old tasks_status values of documents an old worker was processing.
OLD_PROCESSING = ("PENDING", "RUNNING")
#: The process_status values of the new version.
NEW_VALUES = ("READY", "PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT", "SUCCESS", "FAILURE")
INTERRUPTED = ("interrupted by the upgrade to process_status (datafix 0001): the old worker's "
               "run was lost; start the process again")

#: Inverse rule (downgrade): process_status -> tasks_status, and -> the old process_status.
TO_TASKS_STATUS = {"READY": "CREATED", "PENDING": "PENDING", "DISPATCHED": "PENDING",
                   "RUNNING": "RUNNING", "WAITING_FOR_RESULT": "RUNNING", "SUCCESS": "SUCCESS",
                   "FAILURE": "FAILURE"}
TO_OLD_PROCESS_STATUS = {"READY": None, "PENDING": "CALLED", "DISPATCHED": "CALLED",
                         "RUNNING": "RUNNING", "WAITING_FOR_RESULT": "RUNNING",
                         "SUCCESS": "COMPLETED", "FAILURE": "COMPLETED"}


def _string_in(field: str, values) -> dict:
    """``field`` is a string among ``values`` (an array holding one would match ``$in`` alone)."""
    return {field: {"$in": list(values)}, f"{field}.0": {"$exists": False}}


LEGACY = {"$or": [{f: {"$exists": True}} for f in LEGACY_FIELDS]}
NO_LEGACY = {f: {"$exists": False} for f in LEGACY_FIELDS}
IDLE = _string_in("tasks_status", IDLE_MAP)
PROCESSING = _string_in("tasks_status", OLD_PROCESSING)

#: Every document this datafix can migrate (processing ones only with --include-processing).
selector = _string_in("tasks_status", [*IDLE_MAP, *OLD_PROCESSING])
#: Old-shape documents it cannot migrate, and new-shape ones with an invalid process_status.
invalid = {"$or": [
    {"$and": [LEGACY, {"$nor": [selector]}]},
    {"$and": [NO_LEGACY, {"$nor": [_string_in("process_status", NEW_VALUES)]}]},
]}

#: Every field the upgrade removes or replaces, plus the ones that show a later change.
WITNESS = ("process_status", "current_process_step", "errors", "attempt", "last_status_change")
BACKUP = (*LEGACY_FIELDS, *WITNESS)


def _switch(field: str, mapping: dict, default) -> dict:
    branches = [{"case": {"$eq": [f"${field}", old]}, "then": {"$literal": new}}
                for old, new in mapping.items()]
    return {"$switch": {"branches": branches, "default": default}}


_is_processing = {"$in": ["$tasks_status", list(OLD_PROCESSING)]}
#: ``errors`` as a list: itself when an array, [] when missing or null, else ``[errors]``
#: (a string written where a list belongs keeps its message; nothing is dropped).
_errors_list = {"$cond": [{"$isArray": "$errors"}, "$errors",
                          {"$cond": [{"$eq": [{"$ifNull": ["$errors", None]}, None]}, [], ["$errors"]]}]}
UPGRADE_PIPELINE = [
    {"$set": {
        "process_status": _switch("tasks_status",
                                  {**IDLE_MAP, **{s: "FAILURE" for s in OLD_PROCESSING}},
                                  "$process_status"),
        "current_process_step": {"$ifNull": ["$current_task", None]},
        # a missing errors field stays missing: "$errors" of a missing field sets nothing
        "errors": {"$cond": [_is_processing,
                             {"$concatArrays": [_errors_list, [{"$literal": INTERRUPTED}]]},
                             "$errors"]},
    }},
    {"$unset": list(LEGACY_FIELDS)},
]

DOWNGRADE_PIPELINE = [
    {"$set": {
        "tasks_status": _switch("process_status", TO_TASKS_STATUS, None),
        "process_status": _switch("process_status", TO_OLD_PROCESS_STATUS, None),
        "current_task": {"$ifNull": ["$current_process_step", None]},
        "tasks": {"$literal": []},
    }},
    {"$unset": ["current_process_step"]},
]

ROWS = {f"tasks_status {old} -> process_status {new}": {"tasks_status": old}
        for old, new in IDLE_MAP.items()}
PROCESSING_ROWS = {
    **{f"tasks_status {old} (still processing) -> FAILURE, error added": {"tasks_status": old}
       for old in OLD_PROCESSING},
    "tasks_status PENDING or RUNNING, errors not an array -> errors [its value, error added]":
        {"$and": [PROCESSING, {"errors": {"$exists": True, "$ne": None, "$not": {"$type": "array"}}}]},
}
INVERSE_ROWS = {f"process_status {new} -> tasks_status {TO_TASKS_STATUS[new]}": {"process_status": new}
                for new in NEW_VALUES}


def migrated(before: dict) -> dict:
    """The WITNESS fields as the upgrade leaves a document whose backed-up values are ``before``."""
    after = {f: before[f] for f in ("errors", "attempt", "last_status_change") if f in before}
    old = before["tasks_status"]
    after["process_status"] = IDLE_MAP.get(old, "FAILURE")
    after["current_process_step"] = before.get("current_task")
    if old in OLD_PROCESSING:
        errors = before.get("errors")
        listed = errors if isinstance(errors, list) else [] if errors is None else [errors]
        after["errors"] = [*listed, INTERRUPTED]
    return after


def upgrade(ctx):
    """Migrate every old-shape document; stop first if any is still processing (by default)."""
    ctx.report_invalid(invalid, fields=("tasks_status", "process_status"))
    include = bool(ctx.options.get("include_processing"))
    if not include:
        ctx.refuse(PROCESSING, "documents are still processing under the old workers (tasks_status "
                               "PENDING or RUNNING); stop the old workers first, then re-run; or "
                               "pass --include-processing to mark them FAILURE")
    ctx.rewrite(select=selector if include else IDLE, backup=BACKUP, pipeline=UPGRADE_PIPELINE,
                rows={**ROWS, **(PROCESSING_ROWS if include else {})})


def downgrade(ctx):
    """Give every document the old fields back (exactly, where the backup still applies)."""
    ctx.report_invalid({"$and": [NO_LEGACY, {"$nor": [_string_in("process_status", NEW_VALUES)]}]},
                       fields=("process_status",))
    ctx.restore(select={"$and": [NO_LEGACY, _string_in("process_status", NEW_VALUES)]},
                witness=WITNESS, expected=migrated, inverse=DOWNGRADE_PIPELINE, rows=INVERSE_ROWS)
