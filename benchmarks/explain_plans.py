"""The query plans of proc's queries on a real server: what ``explain()`` says, query by query.

    .venv/bin/python -m benchmarks.explain_plans [--processes 4000] [--stuck 100] [--legacy-docs 1000]

Starts a private SecantusDB server (and also uses ``MONGODB_URI`` if it names a real server),
seeds the demo's four Proc collections (``benchmarks.bench_sweep.seed``: mostly finished
processes, ``--stuck`` stuck ones for every reason), creates the model indexes
(``cls.ensure_indexes()``, plus the monitor's), then runs the real code while a pymongo
``CommandListener`` records every command it sends:

- the monitor's sweep: detection (``proc.monitor.stuck.find``) and recovery (``proc.monitor.sweep``,
  with an in-memory broker);
- the API: ``GET /api/status``, ``GET /api/procs`` (no filter, by status, by kind, by both, the
  next page of a cursor) and ``GET /api/procs/<collection>/<id>``, through the Flask app;
- the datafix: ``procctl datafix upgrade`` (``migrations.command.upgrade``, the batches of
  ``migrations.runner.Context.rewrite``) on ``--legacy-docs`` legacy documents in a database
  of their own, two batches.

Each distinct command (same command, same filter shape) is then sent again inside
``explain`` (``executionStats`` for reads; ``queryPlanner`` only for writes, which must not
run twice) and its winning plan printed: ``IXSCAN <index>``, ``COLLSCAN``, ``+ SORT`` for a
blocking sort. Next to it, the plan a mongod can use, derived from the filter, the sort and
the collection's indexes (the longest index prefix with equality or ``$in`` on each field,
then one range or the sort order): a derivation, not a measurement, unless ``MONGODB_URI``
names a mongod, whose column is then measured too.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
from datetime import datetime

from bson import ObjectId

from benchmarks import legacy
from benchmarks.common import CommandRecorder, SecantusProcess, Tier, table
from proc import config, monitor, registry
from proc.monitor import recovery, stuck
from proc.run import messaging
from proc.timeutil import utcnow

DATABASE = "proc_explain"
DATAFIX_DATABASE = "proc_explain_datafix"
#: Commands worth explaining (the others carry no filter or cannot be explained).
EXPLAINABLE = ("find", "aggregate", "count", "distinct", "update", "delete", "findAndModify")
WRITES = ("update", "delete", "findAndModify")
#: Command fields that explain does not take.
DROP = {"lsid", "$db", "$clusterTime", "txnNumber", "$readPreference", "readConcern", "writeConcern",
        "batchSize", "singleBatch", "ordered", "bypassDocumentValidation", "apiVersion", "comment",
        "maxTimeMS", "let", "startTransaction", "autocommit"}


# -- what was sent ---------------------------------------------------------------------------


def shape(value):
    """A filter, sort or pipeline with its values replaced by their kind (for display and
    for grouping equal queries): status strings and field names are kept."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > 4 or not all(isinstance(v, str) and v.isupper() for v in value):
            if all(not isinstance(v, (dict, list)) for v in value):
                return f"[{len(value)} values]"
        return [shape(v) for v in value]
    if isinstance(value, datetime):
        return "<time>"
    if isinstance(value, ObjectId):
        return "<id>"
    if isinstance(value, str) and not value.isupper() and not value.startswith("$"):
        return "<str>" if not re.fullmatch(r"[a-z_]+", value) else value
    return value


def text(value, width: int = 0) -> str:
    out = json.dumps(shape(value), default=str, separators=(",", ":")).replace('"', "")
    return out if not width or len(out) <= width else out[:width - 3] + "..."


def target(name: str, command: dict):
    """(filter, sort, description) of one command."""
    if name == "find":
        return command.get("filter") or {}, command.get("sort"), ""
    if name == "count":
        return command.get("query") or {}, None, ""
    if name == "distinct":
        return command.get("query") or {}, None, f"distinct {command.get('key')}"
    if name == "aggregate":
        pipeline = command.get("pipeline") or []
        first = pipeline[0] if pipeline else {}
        match = first.get("$match", {}) if isinstance(first, dict) else {}
        stages = "+".join(next(iter(s)) for s in pipeline)
        return match, None, stages
    if name == "findAndModify":
        return command.get("query") or {}, command.get("sort"), "upsert" if command.get("upsert") else ""
    if name == "update":
        first = (command.get("updates") or [{}])[0]
        how = "pipeline" if isinstance(first.get("u"), list) else "+".join(first.get("u", {}))
        return first.get("q") or {}, None, ("many " if first.get("multi") else "one ") + how
    if name == "delete":
        first = (command.get("deletes") or [{}])[0]
        return first.get("q") or {}, None, ""
    return {}, None, ""


def explain_command(name: str, command: dict) -> dict:
    """The command as ``explain`` takes it (one statement for update/delete)."""
    cmd = {k: v for k, v in command.items() if k not in DROP}
    if name == "aggregate":
        cmd["cursor"] = {}
    if name == "update":
        cmd["updates"] = cmd["updates"][:1]
    if name == "delete":
        cmd["deletes"] = cmd["deletes"][:1]
    return cmd


# -- the plan a server chose ------------------------------------------------------------------


def describe(stage: dict) -> str:
    name = stage.get("stage", "?")
    children = stage.get("inputStages") or ([stage["inputStage"]] if "inputStage" in stage else [])
    inner = [describe(c) for c in children]
    if stage.get("indexName"):
        return f"{name} {stage['indexName']}"
    if name in ("FETCH", "PROJECTION_SIMPLE", "PROJECTION_DEFAULT", "PROJECTION_COVERED", "LIMIT", "SKIP",
                "SHARDING_FILTER", "UPDATE", "DELETE", "CACHED_PLAN") and len(inner) == 1:
        return inner[0]
    if name == "SORT" and inner:
        return f"{inner[0]} + SORT"
    if inner:
        return f"{name}({', '.join(inner)})"
    return name


def find_key(doc, key: str):
    """The first value of ``key`` anywhere in an explain document."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for value in doc.values():
            found = find_key(value, key)
            if found is not None:
                return found
    elif isinstance(doc, list):
        for value in doc:
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def winning(explained: dict, query: dict) -> tuple[str, str]:
    """(plan, documents examined / returned) from an explain answer for ``query``."""
    plan = find_key(explained, "winningPlan") or {}
    plan = plan.get("queryPlan", plan)  # mongod with the slot-based engine nests it
    stats = find_key(explained, "executionStats") or {}
    parsed = find_key(explained, "parsedQuery")
    out = describe(plan) if plan else "?"
    if parsed == {} and query and out == "COLLSCAN":
        out += " (filter ignored by explain)"
    counts = ""
    if stats:
        counts = f"{stats.get('totalDocsExamined', '?')}/{stats.get('nReturned', '?')}"
    return out, counts


# -- the plan a mongod can use, derived -------------------------------------------------------


def _kind(condition) -> str:
    if not isinstance(condition, dict) or not any(str(k).startswith("$") for k in condition):
        return "eq"
    ops = set(condition)
    if ops <= {"$eq"}:
        return "eq"
    if ops <= {"$in"} and all(not isinstance(v, (dict, re.Pattern)) for v in condition["$in"]):
        return "in"
    if ops <= {"$gt", "$gte", "$lt", "$lte", "$type"}:
        return "range"
    return "other"


def _conditions(query: dict) -> tuple[dict, list]:
    conds, ors = {}, []
    for key, value in query.items():
        if key == "$and":
            for clause in value:
                more, more_ors = _conditions(clause)
                for field, kind in more.items():
                    conds[field] = kind if conds.get(field) in (None, "other") else conds[field]
                ors += more_ors
        elif key == "$or":
            ors.append(value)
        elif not key.startswith("$"):
            conds[key] = _kind(value)
    return conds, ors


def _score(keys: list, conds: dict, sort: dict | None) -> tuple[int, bool]:
    """(leading fields the filter bounds, sort served by the index order)."""
    bounded = 0
    for field, _ in keys:
        kind = conds.get(field)
        if kind in ("eq", "in"):
            bounded += 1
            continue
        if kind == "range":
            bounded += 1
        break
    # The order serves the sort if, after the fields bound to one value, the index's next
    # fields are the sort's (scanned forwards or backwards).
    equal = 0
    while equal < len(keys) and conds.get(keys[equal][0]) == "eq":
        equal += 1
    sort_fields = list((sort or {}).keys())
    rest = [f for f, _ in keys[equal:]]
    sorted_by_index = bool(sort_fields) and rest[:len(sort_fields)] == sort_fields
    return bounded, sorted_by_index


def _best(indexes: dict, conds: dict, sort) -> str | None:
    """The index whose leading fields the filter bounds most (``_id`` equality first); failing
    that, one whose order serves the sort (a walk of the whole index, no blocking sort)."""
    if conds.get("_id") in ("eq", "in"):
        return "IXSCAN _id_"
    best, best_score = None, (0, False)
    for name, keys in {"_id_": [("_id", 1)], **indexes}.items():
        score = _score(keys, conds, sort)
        if score > best_score:
            best, best_score = name, score
    if best is None:
        return None
    if best_score[0] == 0:
        return f"IXSCAN {best} (whole index, in the sort order)"
    return f"IXSCAN {best}" + ("" if best_score[1] or not sort else " + SORT")


def mongod_plan(indexes: dict, query: dict, sort=None, stages: str = "") -> str:
    """The plan a mongod can use for ``query`` (and ``sort``) with ``indexes`` ({name: keys})."""
    conds, ors = _conditions(query)
    found = _best(indexes, conds, sort)
    if found:
        return found
    for clauses in ors:  # an $or: one index scan per clause, if every clause has one
        plans = [_best(indexes, {**conds, **_conditions(c)[0]}, None) for c in clauses]
        if all(plans):
            unique = sorted(set(plans))
            return f"OR({', '.join(unique)})" + (" + SORT" if sort else "")
    if stages and not query:
        return "COLLSCAN (whole collection: the $group reads every document)"
    return "COLLSCAN" + (" + SORT" if sort else "")


# -- running the code ---------------------------------------------------------------------------


def seed_processes(n: int, n_stuck: int) -> None:
    from benchmarks import bench_sweep

    bench_sweep.seed(n, n_stuck)
    # Waiting parents name their child collections, as real ones do, so the sweep counts
    # their children (the (parent_key, process_status) index); some children have a parent.
    for parent, child in (("upload", "entry"), ("project", "precheck")):
        registry.class_for(parent)._get_collection().update_many(
            {"process_status": "WAITING_FOR_RESULT"}, {"$set": {"child_collections": [child]}})
        registry.class_for(child)._get_collection().update_many(
            {"process_status": "SUCCESS", "_id": {"$type": "objectId"}},
            {"$set": {"parent_key": f"{parent}:none:1"}})


def record(tier: Tier, n: int, n_stuck: int, legacy_docs: int) -> tuple[list, dict]:
    """Every command the monitor, the API and the datafix send; the indexes per collection."""
    database = tier.connect(DATABASE, broker_url=config.EMBEDDED_BROKER_URL)
    registry.load_models(["proc.demo.models"])
    registry.forget_settings()
    for cls in registry.proc_classes():
        cls.ensure_indexes()
    recovery.ensure_indexes()
    seed_processes(n, n_stuck)
    from api import create_app

    client = create_app({"TESTING": True, "PROC_API_TOKEN": None}).test_client()
    messaging.set_app(messaging.make_app())

    def get(url: str) -> dict:
        response = client.get(url)
        assert response.status_code == 200, (url, response.get_data(as_text=True)[:300])
        return response.get_json()

    with CommandRecorder() as rec:
        rec.tag = "sweep: detection (proc.monitor.stuck.find)"
        stuck.find(utcnow())
        rec.tag = "sweep: recovery (proc.monitor.sweep)"
        monitor.sweep(utcnow())
        rec.tag = "GET /api/status"
        get("/api/status?workers=false")
        rec.tag = "GET /api/procs"
        first = get("/api/procs?limit=20")
        rec.tag = "GET /api/procs?cursor= (next page)"
        get(f"/api/procs?limit=20&cursor={first['next_cursor']}")
        rec.tag = "GET /api/procs?status=FAILURE"
        get("/api/procs?status=FAILURE&limit=20")
        rec.tag = "GET /api/procs?kind=entry.process_entry"
        get("/api/procs?kind=entry.process_entry&limit=20")
        rec.tag = "GET /api/procs?kind=entry"
        get("/api/procs?kind=entry&limit=20")
        rec.tag = "GET /api/procs?kind=entry.process_entry&status=RUNNING"
        get("/api/procs?kind=entry.process_entry&status=RUNNING&limit=20")
        rec.tag = "GET /api/procs/<collection>/<id>"
        item = first["items"][0]
        get(f"/api/procs/{item['collection']}/{item['id']}")
    indexes = {name: {i: v["key"] for i, v in database[name].index_information().items() if i != "_id_"}
               for name in database.list_collection_names()}
    commands = [(tag, DATABASE, name, cmd) for tag, name, cmd in rec.commands]

    if legacy_docs:
        from migrations import command

        fix_db = tier.connect(DATAFIX_DATABASE)
        fix_db["upload"].insert_many(legacy.uploads(legacy_docs))
        with CommandRecorder() as rec:
            rec.tag = "datafix upgrade (migrations.runner rewrite)"
            result = command.upgrade(batch_size=max(1, legacy_docs // 2))
        assert result.ok, result.to_dict()
        commands += [(tag, DATAFIX_DATABASE, name, cmd) for tag, name, cmd in rec.commands]
        for name in fix_db.list_collection_names():
            indexes[f"{DATAFIX_DATABASE}.{name}"] = {
                i: v["key"] for i, v in fix_db[name].index_information().items() if i != "_id_"}
    return commands, indexes


def reseed(tier: Tier, n: int, n_stuck: int, legacy_docs: int) -> None:
    """The data as it was before the recording (the sweep recovered the stuck processes and
    the datafix migrated its documents): the plans are explained on that."""
    from proc.store import db

    database = db.connect(tier.uri(DATABASE))
    for cls in registry.proc_classes():
        database.drop_collection(cls._get_collection_name())
        cls._collection = None
        cls.ensure_indexes()
    seed_processes(n, n_stuck)
    if legacy_docs:
        fix_db = db.connect(tier.uri(DATAFIX_DATABASE))
        fix_db.drop_collection("upload")
        fix_db["upload"].insert_many(legacy.uploads(legacy_docs))
        db.connect(tier.uri(DATABASE))


def distinct_queries(commands: list) -> list[dict]:
    """One entry per (where, command, filter shape, sort), with the collections it went to."""
    out: dict = {}
    for tag, database, name, cmd in commands:
        if name not in EXPLAINABLE:
            continue
        query, sort, how = target(name, cmd)
        key = (tag, name, text(query), text(sort), how)
        entry = out.setdefault(key, {"where": tag, "command": name, "query": query, "sort": sort,
                                     "how": how, "sent": {}})
        entry["sent"].setdefault(cmd[name], (database, cmd))
    return list(out.values())


def explain_all(tier: Tier, queries: list, column: str) -> None:
    from proc.store import db

    handles = {}
    for q in queries:
        for collection, (database, cmd) in q["sent"].items():
            if database not in handles:
                handles[database] = db.connect(tier.uri(database))
            handle = handles[database]
            verbosity = "queryPlanner" if q["command"] in WRITES else "executionStats"
            try:
                answer = handle.command("explain", explain_command(q["command"], cmd), verbosity=verbosity)
                q.setdefault(column, {})[collection] = winning(answer, q["query"])
            except Exception as exc:  # an explain the server does not support
                q.setdefault(column, {})[collection] = (f"explain failed: {str(exc)[:60]}", "")


def expected(indexes: dict, q: dict) -> dict:
    out = {}
    for collection, (database, _) in q["sent"].items():
        key = collection if database == DATABASE else f"{DATAFIX_DATABASE}.{collection}"
        found = {name: list(keys) for name, keys in indexes.get(key, {}).items()}
        out[collection] = mongod_plan(found, q["query"], q["sort"], q["how"] if q["command"] == "aggregate" else "")
    return out


def merged(per_collection: dict) -> str:
    """One plan for every collection when they agree, else per collection."""
    values = {v if isinstance(v, str) else v[0] for v in per_collection.values()}
    if len(values) == 1:
        return values.pop()
    return "; ".join(f"{c}: {v if isinstance(v, str) else v[0]}" for c, v in sorted(per_collection.items()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4000)
    parser.add_argument("--stuck", type=int, default=100)
    parser.add_argument("--legacy-docs", type=int, default=1000,
                        help="legacy documents for the datafix (two batches); 0: skip the datafix")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.getLogger("proc").setLevel(logging.ERROR)
    logging.getLogger("migrations").setLevel(logging.ERROR)

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(SecantusProcess())
        servers = [("SecantusDB", Tier("real", server.url, f"SecantusDB {server.version()} at {server.url}"))]
        uri = os.environ.get("MONGODB_URI", "")
        if uri.startswith(("mongodb://", "mongodb+srv://")):
            servers.append(("MONGODB_URI", Tier("real", uri, "MONGODB_URI")))
        commands, indexes = record(servers[0][1], args.processes, args.stuck, args.legacy_docs)
        queries = distinct_queries(commands)
        for column, tier in servers:
            if tier is not servers[0][1]:  # the same data there, and the same commands explained
                record(tier, args.processes, args.stuck, args.legacy_docs)
            reseed(tier, args.processes, args.stuck, args.legacy_docs)
            explain_all(tier, queries, column)
        from proc.store import db

        for _, tier in servers:
            for name in (DATABASE, DATAFIX_DATABASE):
                db.connect(tier.uri(name)).client.drop_database(name)
        db.disconnect()

    print(f"{args.processes:,} processes in 4 collections ({args.stuck} stuck), model indexes created; "
          f"datafix on {args.legacy_docs:,} legacy documents, batch size {max(1, args.legacy_docs // 2):,}")
    print("servers: " + ", ".join(f"{c} = {t.description}" for c, t in servers))
    print("plan columns: winning plan; 'examined/returned' = documents examined / returned (reads only: "
          "writes are explained with queryPlanner, never run twice)")
    print()
    headers = ["where", "command", "collections", "filter (sort)", "mongod can use (derived)"]
    for column, _ in servers:
        headers += [f"{column} plan", "examined/returned"]
    rows = []
    for q in queries:
        shown = text(q["query"], 110) + (f" sort {text(q['sort'])}" if q["sort"] else "")
        row = [q["where"], f"{q['command']} {q['how']}".strip(), ", ".join(sorted(q["sent"])), shown,
               merged(expected(indexes, q))]
        for column, _ in servers:
            plans = q.get(column, {})
            row += [merged(plans), ", ".join(sorted({v[1] for v in plans.values() if v[1]}))]
        rows.append(row)
    print(table(headers, rows, "<" * len(headers)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(zip(headers, row)) for row in rows], f, indent=1)


if __name__ == "__main__":
    main()
