"""The OpenAPI 3.0 description of the JSON API, as data (served at /api/openapi.json)."""
from __future__ import annotations

from proc.timeutil import SYNTAX_PATTERN
from proc.machine.phases import PHASES

from .overview import ACTIVE, STATUSES
from .listing import MAX_LIMIT


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


_COUNTS = {"type": "object", "required": list(STATUSES), "additionalProperties": False,
           "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES}}
_AGES = {"type": "object", "required": list(ACTIVE), "additionalProperties": False,
         "properties": {s: {"type": "number", "nullable": True, "minimum": 0} for s in ACTIVE},
         "description": "Seconds since the oldest process in each active status entered it (null: none)."}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_UNREADABLE = {
    "type": "object", "required": ["count", "message", "documents"],
    "description": "The documents this answer left out because a field has a type proc never writes "
                   "(proc.store.reader): how many, a sentence naming them, and the first 20.",
    "properties": {"count": {"type": "integer", "minimum": 0}, "message": _NULLABLE_STRING,
                   "documents": {"type": "array", "items": {
                       "type": "object", "required": ["collection", "id", "problem"],
                       "properties": {"collection": {"type": "string"}, "id": {"type": "string"},
                                      "problem": {"type": "string"}}}}},
}

_PATH_PARAMS = [
    {"name": "collection", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "The Proc collection, e.g. `precheck`."},
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "The document id (24 hexadecimal digits for an ObjectId)."},
]
_UNAUTHORIZED = _error("PROC_API_TOKEN is set and the request does not carry it.")
_DURATION = {"type": "string", "pattern": f"^{SYNTAX_PATTERN.pattern}$",
             "description": "90s, 15m, 1h, 2d or a plain number of seconds."}
_FILTER_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "Every key optional; an empty filter matches every process.",
    "properties": {
        "status": {"oneOf": [{"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
                             {"type": "string"}],
                   "description": "Statuses, a list or a comma-separated string."},
        "kind": {"type": "string", "description": "`collection` or `collection.method`."},
        "older_than": {"oneOf": [_DURATION, {"type": "number", "minimum": 0}],
                       "description": "Last status change longer ago than this."},
        "newer_than": {"oneOf": [_DURATION, {"type": "number", "minimum": 0}],
                       "description": "Last status change within this."},
        "q": {"type": "string", "maxLength": 200,
              "description": "Text in the step or the errors: case-insensitive, plain (not a regex)."},
        "ids": {"type": "array", "items": {"type": "string"}, "description": "`collection/id` strings."},
    },
}
_FILTER_PARAMS = [
    {"name": "status", "in": "query", "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
     "description": "Repeat it (`status=FAILURE&status=PENDING`) or separate with commas."},
    {"name": "kind", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "`collection` or `collection.method`."},
    {"name": "older_than", "in": "query", "required": False, "schema": _DURATION,
     "description": "Last status change longer ago than this duration."},
    {"name": "newer_than", "in": "query", "required": False, "schema": _DURATION,
     "description": "Last status change within this duration."},
    {"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
     "description": "Text in `current_process_step` or `errors`: case-insensitive plain substring; no index."},
    {"name": "ids", "in": "query", "required": False, "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}},
     "description": "`collection/id`; repeat it or separate with commas."},
]


def _action(summary: str, description: str, *, force: bool) -> dict:
    params = list(_PATH_PARAMS)
    if force:
        params.append({"name": "force", "in": "query", "required": False, "schema": {"type": "boolean"},
                       "description": "Act on a healthy running process too (default false)."})
    else:
        params.append({"name": "terminate", "in": "query", "required": False, "schema": {"type": "boolean"},
                       "description": "Also stop code that does not stop on its own: after PROC_CANCEL_GRACE "
                                      "seconds its prefork pool process is terminated (default false). "
                                      "Answers 202 with what will happen to each cancelled attempt."})
    accepted = {} if force else {"202": _json(_ref("CancelAccepted"), "Cancelled; the forced stop of "
                                              "each attempt that ran is planned as `terminate` says.")}
    return {"post": {
        "summary": summary, "description": description, "parameters": params,
        "responses": {
            "200": _json(_ref("ActionResult"), "Done; the process as it is now."),
            **accepted,
            "400": _error("A parameter is malformed (`id`, `force`, `terminate`)."),
            "401": _UNAUTHORIZED,
            "403": _error("Cross-site request refused, or neither a bearer token nor X-Proc-Request was sent."),
            "404": _error("Unknown collection or no such process."),
            "409": _error("Not allowed in the process's current state (healthy and running, finished, "
                          "or changed meanwhile)."),
        }}}


def spec() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "proc check-status API",
            "version": "1.0.0",
            "description": "Counts of processes per status and kind, processes needing attention, "
                           "workers and queues, and admin actions on one process. With PROC_API_TOKEN set, "
                           "every route needs it as a bearer token or as the basic-auth password. POST "
                           "actions also need `Authorization: Bearer` or the `X-Proc-Request` header, and "
                           "are refused cross-site.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"basic": []}],
        "paths": {
            "/api/status": {"get": {
                "summary": "Counts per status and kind, oldest ages, needs attention, recent recoveries, workers "
                           "and queues",
                "parameters": [{"name": "workers", "in": "query", "required": False, "schema": {"type": "boolean"},
                                "description": "Ask the workers (Celery inspect, a short timeout); default true."}],
                "responses": {"200": _json(_ref("Status"), "The overview."),
                              "400": _error("A parameter is malformed (`workers`)."),
                              "401": _UNAUTHORIZED}}},
            "/api/procs": {"get": {
                "summary": "Processes a filter matches, newest status change (or highest attempt) first",
                "parameters": [*_FILTER_PARAMS,
                    {"name": "sort", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["last_change", "attempt"]},
                     "description": "`last_change` (default) or `attempt`; `attempt` has no index."},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "`next_cursor` of the previous page (of the same sort)."},
                ],
                "responses": {"200": _json(_ref("ProcList"), "One page of processes."),
                              "400": _error("A parameter is malformed; `parameter` names it."),
                              "401": _UNAUTHORIZED}}},
            "/api/procs/bulk": {"post": {
                "summary": "Reset, redispatch or cancel every process a filter matches (or count them)",
                "description": "Each document goes through the single action's conditional transition, "
                               "recorded in its history with who asked; a dry run writes nothing. At most "
                               "PROC_BULK_LIMIT documents per call.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BulkRequest")}}},
                "responses": {"200": _json({"oneOf": [_ref("BulkDryRun"), _ref("BulkResult")]},
                                           "The dry run's count and sample, or what the real run did."),
                              "400": _error("The body is not a JSON object (or nests more than 8 deep), a key "
                                            "or value is malformed, the filter is missing or empty (without "
                                            "`all: true`), or it matches more than PROC_BULK_LIMIT; "
                                            "`parameter` names it."),
                              "401": _UNAUTHORIZED,
                              "403": _error("Cross-site request refused, or neither a bearer token nor "
                                            "X-Proc-Request was sent.")}}},
            "/api/bulk-actions": {"get": {
                "summary": "The most recent bulk actions, newest first",
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 200}}],
                "responses": {"200": _json(_ref("BulkActionList"), "The audit records."),
                              "400": _error("`limit` is malformed."),
                              "401": _UNAUTHORIZED}}},
            "/api/procs/{collection}/{id}": {"get": {
                "summary": "One process: every field, errors, warnings, history",
                "parameters": list(_PATH_PARAMS),
                "responses": {"200": _json(_ref("ProcDetail"), "The process."),
                              "400": _error("The id is malformed."),
                              "401": _UNAUTHORIZED,
                              "404": _error("Unknown collection or no such process.")}}},
            "/api/procs/{collection}/{id}/reset": _action(
                "Put a stuck or failed process back to READY",
                "Refused (409) for a healthy active process unless force=true.", force=True),
            "/api/procs/{collection}/{id}/redispatch": _action(
                "Send a stuck or failed process again, as a new attempt",
                "Refused (409) for a healthy active process unless force=true.", force=True),
            "/api/procs/{collection}/{id}/cancel": _action(
                "End a pending or running process as FAILURE (cancelled), revoking its Celery task",
                "Refused (409) for a process that is not active.", force=False),
            "/api/timings": {"get": {
                "summary": "Where time goes: per kind, n, p50, p95 and max of the seconds held, queued, "
                           "run and waiting, over the processes that ended in the window (from the time "
                           "buckets: p50 and p95 within 4.69%, n and max exact)",
                "parameters": [
                    {"name": "window", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 30 * 24 * 3600},
                     "description": "Seconds back from now (default 3600, at most 30 days: the buckets' "
                                    "retention). The start is rounded down to its bucket's start (a minute "
                                    "up to a day, an hour beyond): `since` in the answer."},
                    {"name": "kind", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "`collection` or `collection.method`, as for /api/procs."},
                ],
                "responses": {"200": _json(_ref("Timings"), "Every kind, every phase."),
                              "400": _error("`window` or `kind` is malformed; `parameter` names it."),
                              "401": _UNAUTHORIZED}}},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI description.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              "401": _UNAUTHORIZED}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic",
                                          "description": "Any user name; the password is the token."}},
            "schemas": _schemas(),
        },
    }


def _timings() -> dict:
    number = {"type": "number", "nullable": True, "minimum": 0}
    stats = {"type": "object", "required": ["n", "p50", "p95", "max"], "additionalProperties": False,
             "properties": {"n": {"type": "integer", "minimum": 0}, "p50": number, "p95": number,
                            "max": number}}
    phases = {"type": "object", "required": list(PHASES), "additionalProperties": False,
              "properties": {p: stats for p in PHASES}}
    return {"type": "object", "required": ["window_seconds", "since", "bucket_seconds", "kinds"],
            "properties": {"window_seconds": {"type": "integer"},
                           "since": {"type": "string", "format": "date-time",
                                     "description": "The window's start as read (rounded down to its bucket)."},
                           "bucket_seconds": {"type": "integer", "enum": [60, 3600]},
                           "kinds": {"type": "object", "additionalProperties": phases,
                                     "description": "Keyed by `collection.method`."}}}


def _schemas() -> dict:
    summary = {
        "type": "object",
        "required": ["collection", "id", "kind", "status", "attempt", "last_status_change", "age_seconds"],
        "properties": {
            "collection": {"type": "string"}, "id": {"type": "string"}, "kind": {"type": "string"},
            "status": _NULLABLE_STRING, "attempt": {"type": "integer", "nullable": True}, "step": _NULLABLE_STRING,
            "last_status_change": {"type": "string", "nullable": True, "format": "date-time"},
            "age_seconds": {"type": "number", "nullable": True}, "age": {"type": "string"},
            "worker": _NULLABLE_STRING, "last_error": _NULLABLE_STRING,
        },
    }
    attention = {
        "type": "object",
        "required": ["collection", "id", "kind", "status", "reason", "detail"],
        "properties": {"collection": {"type": "string"}, "id": {"type": "string"}, "kind": {"type": "string"},
                       "status": {"type": "string"}, "attempt": {"type": "integer"},
                       "age_seconds": {"type": "number", "nullable": True}, "age": {"type": "string"},
                       "reason": {"type": "string"}, "detail": {"type": "string"}, "worker": _NULLABLE_STRING},
    }
    recovery = {
        "type": "object",
        "description": "One recovery or alert of the monitor (proc_recoveries), newest first.",
        "required": ["time", "collection", "id", "kind", "status_before", "action", "reason", "detail", "url"],
        "properties": {
            "time": {"type": "string", "nullable": True, "format": "date-time"},
            "age_seconds": {"type": "number", "nullable": True},
            "collection": {"type": "string"}, "id": {"type": "string"}, "kind": _NULLABLE_STRING,
            "status_before": {**_NULLABLE_STRING, "description": "The status the process was stuck in."},
            "attempt": {"type": "integer", "nullable": True},
            "action": {**_NULLABLE_STRING, "description": "failed, retried, sent again, join run or alerted."},
            "action_text": {**_NULLABLE_STRING, "description": "What the monitor did, in plain words."},
            "reason": _NULLABLE_STRING, "detail": {"type": "string"},
            "url": {"type": "string", "description": "The process's page on the check-status site."},
        },
    }
    kind = {
        "type": "object",
        "required": ["kind", "collection", "method", "counts", "total", "oldest_age_seconds", "limit", "in_use"],
        "properties": {
            "kind": {"type": "string"}, "collection": {"type": "string"}, "method": _NULLABLE_STRING,
            "registered": {"type": "boolean"}, "counts": _COUNTS, "total": {"type": "integer"},
            "oldest_age_seconds": _AGES, "limit": {"type": "integer", "nullable": True},
            "in_use": {"type": "integer", "nullable": True}, "queue": _NULLABLE_STRING,
            "thresholds": {"type": "object", "nullable": True, "properties": {
                "queue_timeout": {"type": "number"},
                "expected_duration": {"type": "number", "nullable": True,
                                      "description": "null when it is a function of the document"},
                "heartbeat_timeout": {"type": "number"}}},
        },
    }
    worker = {"type": "object", "required": ["name", "queues", "active", "reserved"],
              "properties": {"name": {"type": "string"}, "queues": {"type": "array", "items": {"type": "string"}},
                             "active": {"type": "integer", "nullable": True},
                             "reserved": {"type": "integer", "nullable": True}}}
    host = {"type": "object", "required": ["name", "answering", "busy", "running"],
            "properties": {"name": {"type": "string"}, "registered": {"type": "boolean"},
                           "host": _NULLABLE_STRING, "pool": _NULLABLE_STRING,
                           "concurrency": {"type": "integer", "nullable": True},
                           "busy": {"type": "integer", "description": "RUNNING processes it runs"},
                           "queues": {"type": "array", "nullable": True, "items": {"type": "string"}},
                           "clock_offset_seconds": {"type": "number", "nullable": True,
                                                    "description": "database server's clock minus this host's"},
                           "last_seen_age_seconds": {"type": "number", "nullable": True},
                           "oldest_heartbeat_age_seconds": {"type": "number", "nullable": True},
                           "answering": {"type": "boolean"}, "said": _NULLABLE_STRING,
                           "running": {"type": "array", "items": {"type": "object", "properties": {
                               "collection": {"type": "string"}, "id": {"type": "string"},
                               "method": _NULLABLE_STRING}}}}}
    queue = {"type": "object", "required": ["name", "depth"],
             "properties": {"name": {"type": "string"}, "depth": {"type": "integer", "nullable": True},
                            "consumers": {"type": "array", "nullable": True, "items": {"type": "string"}}}}
    return {
        "Error": {"type": "object", "required": ["error", "status"],
                  "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                                 "parameter": {"type": "string"}}},
        "Counts": _COUNTS,
        "Status": {
            "type": "object",
            "required": ["counts", "oldest_age_seconds", "kinds", "needs_attention", "recoveries", "workers",
                         "queues", "broker", "database"],
            "properties": {
                "generated_at": {"type": "string", "format": "date-time"},
                "unreadable": _UNREADABLE,
                "counts": _ref("Counts"), "oldest_age_seconds": _AGES,
                "count_basis": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": "What each count covers: exact (live statuses), READY "
                                               "exact up to ready_cap, SUCCESS and FAILURE ended within "
                                               "ended_window_seconds."},
                "count_text": {"type": "object", "additionalProperties": {"type": "string"}},
                "ended_window_seconds": {"type": "number"}, "ready_cap": {"type": "integer"},
                "all_time": {"type": "object", "required": ["estimated", "processes", "text"],
                             "properties": {"estimated": {"type": "boolean"},
                                            "processes": {"type": "integer"}, "text": {"type": "string"}},
                             "description": "Every process of every collection, estimated "
                                            "(estimated_document_count, cached a minute per process)."},
                "kinds": {"type": "array", "items": kind},
                "hints": {"type": "array", "items": {"type": "string"}},
                "needs_attention": {"type": "array", "items": attention},
                "needs_attention_capped": {"type": "boolean"},
                "recoveries": {"type": "array", "items": recovery,
                               "description": "The monitor's recent recoveries (PROC_RECOVERY_HOURS, at most "
                                              "PROC_RECOVERY_LIMIT), newest first."},
                "recoveries_window_hours": {"type": "number"},
                "workers": {"type": "object", "required": ["answered", "list"], "properties": {
                    "asked": {"type": "boolean"}, "answered": {"type": "boolean"},
                    "inspect_timeout": {"type": "number"},
                    "counts_timeout": {"type": "number", "description": "Seconds a worker that answered had to "
                                       "answer its active and reserved counts (null counts: no answer)."},
                    "list": {"type": "array", "items": worker}}},
                "hosts": {"type": "array", "items": host,
                          "description": "Per worker (proc.run.presence records and RUNNING processes), "
                                         "the ones that stopped answering first."},
                "hosts_silent_after_seconds": {"type": "number"},
                "queues": {"type": "array", "items": queue},
                "broker": {"type": "object", "required": ["url", "reachable"], "properties": {
                    "url": {"type": "string"}, "reachable": {"type": "boolean"}, "error": _NULLABLE_STRING}},
                "database": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string"}, "embedded": {"type": "boolean"}}},
            },
        },
        "ProcSummary": summary,
        "ProcList": {"type": "object", "required": ["items", "limit", "next_cursor"],
                     "properties": {"items": {"type": "array", "items": _ref("ProcSummary")},
                                    "limit": {"type": "integer"}, "next_cursor": _NULLABLE_STRING,
                                    "unreadable": _UNREADABLE,
                                    "stopped_early": {"type": "boolean", "description":
                                                      "a text search (q) read scan_cap documents of a "
                                                      "collection before the page was full: next_cursor "
                                                      "continues it"},
                                    "scan_cap": {"type": "integer", "nullable": True},
                                    "sort": {"type": "string"}, "filter": _FILTER_SCHEMA}},
        **_bulk_schemas(summary),
        "ProcDetail": {"allOf": [_ref("ProcSummary"), {
            "type": "object",
            "required": ["fields", "errors", "warnings", "history", "actions"],
            "properties": {
                "unreadable": {**_NULLABLE_STRING, "description": "The field whose type proc never writes "
                               "(\"attempt is a string\"): the document is shown as stored, not judged."},
                "fields": {"type": "object"},
                "errors": {"type": "array", "items": {"type": "string"}},
                "warnings": {"type": "array", "items": {"type": "string"}},
                "history": {"type": "array", "items": {"type": "object"}},
                "needs_attention": {"type": "object", "nullable": True},
                "settings": {"type": "object", "nullable": True},
                "actions": {"type": "object", "properties": {
                    "reset": {"type": "boolean"}, "redispatch": {"type": "boolean"}, "cancel": {"type": "boolean"}}},
            }}]},
        "Timings": _timings(),
        "ActionResult": {"type": "object", "required": ["action", "by", "process"],
                         "properties": {"action": {"type": "string"}, "by": {"type": "string"},
                                        "process": _ref("ProcDetail")}},
        "CancelAccepted": {"type": "object", "required": ["action", "by", "process", "terminate"],
                           "properties": {"action": {"type": "string"}, "by": {"type": "string"},
                                          "process": _ref("ProcDetail"),
                                          "terminate": {"type": "array", "items": _ref("StopPlan")}}},
        "StopPlan": {"type": "object", "required": ["collection", "id", "attempt", "outcome", "detail"],
                     "properties": {
                         "collection": {"type": "string"}, "id": {"type": "string"},
                         "attempt": {"type": "integer"},
                         "outcome": {"type": "string", "enum": ["scheduled", "cannot", "not_running", "not_sent"]},
                         "detail": {"type": "string"}, "pool": _NULLABLE_STRING,
                         "after_seconds": {"type": "number", "nullable": True}}},
    }


def _bulk_schemas(summary: dict) -> dict:
    skipped = {"type": "object", "required": ["collection", "id", "reason"],
               "properties": {"collection": {"type": "string"}, "id": {"type": "string"},
                              "reason": {"type": "string"}}}
    record = {"type": "object", "required": ["id", "time", "action", "filter", "by", "matched", "changed", "skipped"],
              "properties": {"id": {"type": "string"}, "time": {"type": "string", "nullable": True, "format": "date-time"},
                             "action": {"type": "string"}, "filter": {"type": "object"}, "force": {"type": "boolean"},
                             "by": _NULLABLE_STRING, "matched": {"type": "integer"}, "changed": {"type": "integer"},
                             "skipped": {"type": "integer"}, "seconds": {"type": "number", "nullable": True}}}
    return {
        "Filter": _FILTER_SCHEMA,
        "BulkFilter": {**_FILTER_SCHEMA, "minProperties": 1,
                       "description": "At least one filter key, or exactly {\"all\": true} for every process: "
                                      "a missing or empty filter answers 400.",
                       "properties": {**_FILTER_SCHEMA["properties"], "all": {
                           "type": "boolean", "description": "true, alone: every process."}}},
        "BulkRequest": {"type": "object", "required": ["action", "filter"], "additionalProperties": False,
                        "properties": {"action": {"type": "string", "enum": ["reset", "redispatch", "cancel"]},
                                       "filter": _ref("BulkFilter"),
                                       "dry_run": {"type": "boolean", "description": "Count, write nothing."},
                                       "force": {"type": "boolean",
                                                 "description": "Reset or redispatch healthy running ones too."}}},
        "BulkDryRun": {"type": "object", "required": ["matched", "would_change", "sample"], "additionalProperties": False,
                       "properties": {"matched": {"type": "integer", "minimum": 0},
                                      "would_change": {"type": "integer", "minimum": 0},
                                      "sample": {"type": "array", "maxItems": 20, "items": summary,
                                                 "description": "The first 20 that would change, newest first."}}},
        "BulkResult": {"type": "object", "required": ["changed", "skipped", "by"], "additionalProperties": False,
                       "properties": {"changed": {"type": "integer", "minimum": 0},
                                      "skipped": {"type": "array", "items": skipped}, "by": {"type": "string"}}},
        "BulkActionList": {"type": "object", "required": ["items"],
                           "properties": {"items": {"type": "array", "items": record}}},
    }
