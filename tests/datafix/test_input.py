"""The datafix CLI and what it is given: names for ``new`` (nothing of a name is ever run),
files that exit or raise at import, bad arguments, datafix 0001 on malformed legacy
documents and ``_id``s the keyset walk cannot order, a refused write named, and ``verify``
on documents the current views cannot read.

Every command runs as ``procctl datafix ...``, a process of its own, wherever the database
does not matter to it (``new``, a file that fails to load, bad arguments: each stops before
it reads a document), on both tiers. Where it does: a process against this test's
database on the real tier, and in-process (``CliRunner``, the same code path) on the
embedded tier, whose database a process of its own cannot share.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
from typing import NamedTuple

import bson
import pytest
from bson import MaxKey, MinKey, Timestamp
from click.testing import CliRunner

import support
from datafix_toys import sequence_dir
from legacy_data import snapshot
from migrations import readable, script
from migrations.backup import COLLECTION as BACKUPS
from migrations.ledger import COLLECTION as LEDGER
from migrations.lock import COLLECTION as LOCK
from proc.cli import cli
from proc.document import Proc
from support import PROJECT_DIR, venv_bin

FIX = script.discover()[0].module


class Ran(NamedTuple):
    code: int
    out: str
    err: str


def _env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PROC_DATAFIX_VERSIONS", "PROC_MODELS")}
    return {**env, "MONGODB_URI": uri}


def process(database, *args) -> Ran:
    """``procctl datafix ARGS`` as its own process: this test's database on the real tier,
    an embedded database of its own on the embedded tier. ``args`` may be bytes (argv
    that is not UTF-8)."""
    uri = support.database_uri(database.name) if support.real_tier() else "mongomock://localhost/own"
    done = subprocess.run([venv_bin("procctl"), "datafix", *args], env=_env(uri), capture_output=True,
                          timeout=120, cwd=PROJECT_DIR)
    return Ran(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def datafix(database, *args) -> Ran:
    """``procctl datafix ARGS`` on this test's database: a process on the real tier,
    in-process on the embedded tier."""
    if support.real_tier():
        return process(database, *args)
    result = CliRunner().invoke(cli, ["datafix", *args], catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def of_0001(ran: Ran) -> dict:
    """Datafix 0001's part of a ``--json`` report (on the real tier the command is a process
    of its own, which sees proc's whole shipped sequence, not only 0001)."""
    reports = [d for d in json.loads(ran.out)["datafixes"] if d["id"] == "0001"]
    assert len(reports) == 1, ran.out
    return reports[0]


def usage_error(ran: Ran, *named: str) -> None:
    """Exit 2, one clear message naming ``named``, no traceback."""
    assert ran.code == 2, ran
    assert "Traceback" not in ran.err and "Traceback" not in ran.out, ran.err
    for text in named:
        assert text in ran.err, (text, ran.err)


# -- new NAME: a literal, or a refusal; nothing of a name runs ------------------------------------


PAYLOAD = '"""; import pathlib; pathlib.Path({marker!r}).write_text("ran") #'
NAMES = ['say "hi", it\'s', "back\\slash\\", "x'''y\"\"\"z", "ends with a quote\"", "${date} ${revision}",
         "../../escape/../me", "café ünïcode 42", "  spaced  ", PAYLOAD]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_new_writes_the_name_as_a_literal_that_reads_back_exactly(database, tmp_path, name):
    app = sequence_dir(tmp_path, "app")
    marker = tmp_path / "ran"
    name = name.format(marker=str(marker)) if name is PAYLOAD else name
    made = process(database, "--versions", str(app), "new", "--sequence", "app", name)
    assert made.code == 0, made
    [path] = app.glob("0001_*.py")
    assert made.out.strip() == f"created {path}"
    assert path.parent == app and path.name == f"0001_{script.slug(name)}.py"
    assert set(path.name[5:-3]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")
    compile(path.read_text(), str(path), "exec")
    status = process(database, "--versions", str(app), "status", "--json")  # imports the file
    assert status.code == 0, status
    described = {d["id"]: d["description"] for d in json.loads(status.out)["datafixes"]}
    assert described["app:0001"] == name
    [loaded] = [s for s in script.discover(app) if s.label == "app:0001"]
    assert loaded.module.description == name and loaded.module.__doc__.splitlines()[0] == name
    assert not marker.exists()  # the payload was text, never code


@pytest.mark.parametrize("name,named", [
    ("two\nlines", "contains the character '\\n'"),
    ("tab\there", "contains the character '\\t'"),
    ("line\u2028separator", "contains the character '\\u2028'"),
    ("no\u00a0break", "contains the character '\\xa0'"),
    (b"not utf-8 \xff", "contains the character '\\udcff'"),
    ("", "the datafix name is empty"),
    ("   ", "the datafix name is empty"),
    ("ééé", "no ASCII letters or digits"),
    ("../..", "no ASCII letters or digits"),
    ("x" * 201, "at most 200"),
])
def test_new_refuses_a_name_it_cannot_write_and_writes_nothing(database, tmp_path, name, named):
    app = sequence_dir(tmp_path, "app")
    usage_error(process(database, "--versions", str(app), "new", "--sequence", "app", name), named)
    assert sorted(p.name for p in app.iterdir()) == ["sequence.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


def test_new_never_writes_over_what_holds_its_path(database, tmp_path):
    app = sequence_dir(tmp_path, "app")
    (app / "0001_backfill.py").mkdir()  # not a datafix file, but it holds the path
    usage_error(process(database, "--versions", str(app), "new", "--sequence", "app", "backfill"),
                f"{app / '0001_backfill.py'} already exists")
    assert (app / "0001_backfill.py").is_dir()


# -- a file that exits or raises at import is a load error ---------------------------------------


BODIES = {
    "sys.exit(0)": "import sys\n\nsys.exit(0)\n",
    "SystemExit": "raise SystemExit\n",
    "KeyboardInterrupt": "x = 1\nraise KeyboardInterrupt\n",
    "GeneratorExit": "raise GeneratorExit('odd')\n",
    "BaseException subclass": "class Stop(BaseException):\n    pass\n\n\nraise Stop('from a base class')\n",
}
SHOWN = {"sys.exit(0)": ("SystemExit(0)", 3), "SystemExit": ("SystemExit(None)", 1),
         "KeyboardInterrupt": ("KeyboardInterrupt", 2), "GeneratorExit": ("GeneratorExit: odd", 1),
         "BaseException subclass": ("Stop: from a base class", 5)}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_verify_exits_2_naming_a_file_that_exits_or_raises_at_import(database, tmp_path, kind):
    app = sequence_dir(tmp_path, "app")
    path = app / "0001_bad.py"
    path.write_text(BODIES[kind])
    shown, line = SHOWN[kind]
    usage_error(process(database, "--versions", str(app), "verify"),
                f"datafix {path} cannot be loaded: {shown}", f"at line {line}")


@pytest.mark.parametrize("args", [["status"], ["upgrade", "--yes"], ["upgrade", "--dry-run"],
                                  ["downgrade", "--yes"], ["stamp", "0001"], ["accept", "0001"],
                                  ["history"], ["new", "--sequence", "app", "next"]])
def test_every_command_loading_the_files_refuses_one_that_exits(database, tmp_path, args):
    app = sequence_dir(tmp_path, "app")
    path = app / "0001_bad.py"
    path.write_text(BODIES["sys.exit(0)"])
    usage_error(process(database, "--versions", str(app), *args), str(path), "SystemExit(0)")
    assert sorted(p.name for p in app.iterdir()) == ["0001_bad.py", "sequence.txt"]
    if support.real_tier():
        assert database[LEDGER].count_documents({}) == 0 and database[LOCK].count_documents({}) == 0


# -- bad arguments: exit 2, the problem and the fix named, nothing written -----------------------


BAD_ARGS = [
    (["upgrade", "--yes", "--collection", ""], ["--collection ''", "empty"]),
    (["upgrade", "--yes", "--collection", " "], ["--collection ' '", "empty"]),
    (["upgrade", "--yes", "--collection", "a$b"], ["--collection 'a$b'", "contains '$'"]),
    (["upgrade", "--yes", "--collection", b"bad\xff"], ["not valid UTF-8"]),
    (["upgrade", "--yes", "--collection", "x..y"], ["--collection 'x..y'", "'..'"]),
    (["upgrade", "--yes", "--collection", " upload"], ["white space"]),
    (["upgrade", "--yes", "--collection", "system.views"], ["system collection"]),
    (["upgrade", "--yes", "--collection", "datafix_backup"], ["datafix's own bookkeeping"]),
    (["status", "--collection", "datafix_ledger"], ["datafix's own bookkeeping"]),
    (["verify", "--collection", ""], ["--collection ''"]),
    (["downgrade", "--yes", "--collection", ""], ["--collection ''"]),
    (["upgrade", "--yes", "--collection", "x" * 256], ["longer than 255 bytes"]),
    (["upgrade", "--yes", "--to", ""], ["--to ''", "base"]),
    (["downgrade", "--yes", "--to", " "], ["--to ' '", "base"]),
    (["upgrade", "--yes", "--to", "nope"], ["'nope' is not a datafix version"]),
    (["upgrade", "--yes", "--batch-size", "0"], ["--batch-size", "1<=x<=100000"]),
    (["upgrade", "--yes", "--batch-size", str(10 ** 30)], ["--batch-size", "1<=x<=100000"]),
    (["upgrade", "--yes", "--batch-size", "abc"], ["--batch-size", "not a valid integer"]),
    (["--uri", "mongodb://[bad", "status"], ["the database URI (--uri or MONGODB_URI) 'mongodb://***' cannot be used", "Write it as mongodb://"]),
    (["--uri", "mongodb://host:99999/x", "verify"], ["the database URI (--uri or MONGODB_URI)", "Port must be an integer", "Write it as"]),
    (["prune-backups", "--yes", "--older-than", ""], ["--older-than"]),
    (["stamp", ""], ["'' is not a datafix version"]),
]


@pytest.mark.parametrize("args,named", BAD_ARGS, ids=range(len(BAD_ARGS)))
def test_bad_arguments_exit_2_naming_the_problem_and_write_nothing(database, args, named):
    legacy = {"_id": "old", "tasks": ["t"], "tasks_status": "CREATED", "current_task": None}
    database.upload.insert_one(copy.deepcopy(legacy))
    before = snapshot(database)
    usage_error(process(database, *args), *named)
    if not any(isinstance(a, bytes) or a == "--uri" for a in args):  # the same, in-process
        here = CliRunner().invoke(cli, ["datafix", *args], catch_exceptions=False)
        assert here.exit_code == 2, here.output
    assert snapshot(database) == before  # no document, ledger, lock or backup written


# -- datafix 0001: malformed errors, _ids the walk cannot order -----------------------------------


def k(value):
    return bson.encode({"k": value})


def legacy_docs() -> list[dict]:
    """Processing documents with every shape of ``errors``, idle ones, odd ``_id`` types."""
    docs = [
        {"_id": "string-errors", "tasks_status": "RUNNING", "errors": "disk full"},
        {"_id": "number-errors", "tasks_status": "PENDING", "errors": 7},
        {"_id": "object-errors", "tasks_status": "RUNNING", "errors": {"code": 3}},
        {"_id": "null-errors", "tasks_status": "RUNNING", "errors": None},
        {"_id": "no-errors", "tasks_status": "PENDING"},
        {"_id": "list-errors", "tasks_status": "RUNNING", "errors": ["earlier"]},
        {"_id": "idle-string-errors", "tasks_status": "SUCCESS", "errors": "kept as it is"},
        {"_id": MinKey(), "tasks_status": "CREATED"},
        {"_id": MaxKey(), "tasks_status": "RUNNING", "errors": "max"},
        {"_id": Timestamp(1700000000, 1), "tasks_status": "FAILURE", "errors": ["t"]},
        {"_id": Timestamp(1700000000, 2), "tasks_status": "CREATED"},
        {"_id": 5, "tasks_status": "CREATED"},
    ]
    for doc in docs:
        doc.update(tasks=["a"], current_task="step")
    return docs


def expected_errors(doc):
    if doc["tasks_status"] not in ("PENDING", "RUNNING"):
        return doc.get("errors", "missing")
    errors = doc.get("errors")
    return [*(errors if isinstance(errors, list) else [] if errors is None else [errors]), FIX.INTERRUPTED]


def test_0001_migrates_malformed_errors_and_odd_ids_says_so_in_the_dry_run_and_rolls_back(database):
    docs = legacy_docs()
    database.upload.insert_many(copy.deepcopy(docs))
    original = snapshot(database)
    dry = datafix(database, "upgrade", "--dry-run", "--include-processing", "--batch-size", "2")
    assert dry.code == 0, dry
    assert "0001 tasks/current_task/tasks_status -> process_status/current_process_step: would be applied" \
        in dry.out
    assert "upload: matched 12" in dry.out
    assert "tasks_status PENDING or RUNNING, errors not an array -> errors [its value, error added]: 4" \
        in dry.out
    assert "string-errors" in dry.out and "MaxKey()" in dry.out
    assert snapshot(database) == original
    up = datafix(database, "upgrade", "--yes", "--include-processing", "--batch-size", "2", "--json")
    assert up.code == 0, up
    report = of_0001(up)  # a process of its own sees the whole shipped sequence
    assert report["state"] == "applied" and report["totals"]["migrated"] == len(docs)
    after = {k(d["_id"]): d for d in database.upload.find({})}
    for doc in docs:
        now = after[k(doc["_id"])]
        assert "tasks_status" not in now and now["current_process_step"] == "step", now
        assert now["process_status"] == FIX.IDLE_MAP.get(doc["tasks_status"], "FAILURE")
        assert now.get("errors", "missing") == expected_errors(doc), now
    # to the base: a process of its own also applied the datafixes shipped after 0001
    dry_down = datafix(database, "downgrade", "--to", "base", "--dry-run", "--batch-size", "2", "--json")
    assert dry_down.code == 0, dry_down
    assert of_0001(dry_down)["totals"]["restored"] == len(docs)  # 4 odd _ids
    down = datafix(database, "downgrade", "--to", "base", "--yes", "--batch-size", "2")
    assert down.code == 0, down
    assert snapshot(database)["upload"] == original["upload"]  # exactly the old documents


@pytest.mark.real_server
def test_0001_on_a_real_server_walks_javascript_regex_and_decimal_ids_too(database):
    """mongomock cannot store a JavaScript ``_id``; a real server can. A regular expression
    is no ``_id`` on mongod, but SecantusDB takes one: it is read after the walk."""
    from bson import Code, Decimal128, Int64, Regex
    from pymongo.errors import WriteError

    ids = [Code("function () {}"), Code("x", {"scope": 1}), Decimal128("2.5"), Int64(7), 1]
    database.upload.insert_many([{"_id": i, "tasks": [], "tasks_status": "RUNNING", "errors": "x"}
                                 for i in ids])
    try:
        database.upload.insert_one({"_id": Regex("^a"), "tasks": [], "tasks_status": "CREATED"})
    except WriteError:  # as mongod answers
        pass
    up = datafix(database, "upgrade", "--yes", "--include-processing", "--batch-size", "2")
    assert up.code == 0, up
    assert database.upload.count_documents({"process_status": {"$exists": False}}) == 0
    assert database.upload.count_documents({"errors": ["x", FIX.INTERRUPTED]}) == len(ids)


REFUSING = '''"""Appends to a list field; a document holding a string there is refused by the server."""
revision = "0001"
description = "append to l"
selector = {"l": {"$exists": True}, "done": {"$exists": False}}
invalid = {"_never_": {"$exists": True}}


def upgrade(ctx):
    ctx.rewrite(select=selector, backup=("l", "done"), rows={},
                pipeline=[{"$set": {"l": {"$concatArrays": ["$l", ["x"]]}, "done": True}}])


def downgrade(ctx):
    pass
'''


def test_a_write_the_server_refuses_fails_the_run_naming_collection_and_id(database, tmp_path):
    app = sequence_dir(tmp_path, "app")
    (app / "0001_append.py").write_text(REFUSING)
    database.upload.insert_many([{"_id": i, "l": [], "process_status": "READY"} for i in range(6)])
    database.upload.update_one({"_id": 3}, {"$set": {"l": "not a list"}})
    ran = datafix(database, "--versions", str(app), "upgrade", "--yes", "--batch-size", "4")
    assert ran.code == 1, ran
    assert "upload: the server refused to migrate 1 document(s): _id 3: " in ran.out, ran.out
    assert "concatArrays" in ran.out
    assert {d["_id"] for d in database.upload.find({"done": True})} == {0, 1, 2}  # the run stopped there
    entry = database[LEDGER].find_one({"_id": "app:0001"})
    assert entry["state"] == "failed" and "_id 3" in entry["error"]
    database.upload.update_one({"_id": 3}, {"$set": {"l": []}})  # the operator fixes it
    again = datafix(database, "--versions", str(app), "upgrade", "--yes")
    assert again.code == 0, again
    assert database.upload.count_documents({"done": True}) == 6
    assert database[BACKUPS].count_documents({"doc_id": 3}) == 2  # backed up before each attempt


# -- verify: documents the current views cannot read ----------------------------------------------


def test_verify_counts_and_names_documents_the_views_cannot_read(database):
    good = {"process_status": "READY", "current_process_step": None, "attempt": 0, "errors": []}
    bad = {"step-int": {"current_process_step": 3},
           "date-str": {"last_status_change": "2024-05-01T10:00:00"},
           "attempt-str": {"attempt": "2"},
           "errors-str": {"errors": "boom"},
           "process-list": {"current_process": ["process_upload"]},
           "two-fields": {"current_process": 4, "heartbeat": "now"}}
    database.upload.insert_many([{"_id": "fine", **good, "name": "u"}]
                                + [{"_id": i, **good, "name": "u", **v} for i, v in bad.items()])
    database.entry.insert_one({"_id": "entry-name", **good, "path": 17})  # a field of the Entry model
    ran = datafix(database, "verify")
    assert ran.code == 1, ran
    assert "7 unreadable by the current views" in ran.out
    for line in ("upload _id 'step-int': current_process_step is an int, not a string",
                 "upload _id 'date-str': last_status_change is a str, not a date",
                 "upload _id 'attempt-str': attempt is a str, not a number",
                 "upload _id 'errors-str': errors is a str, not an array",
                 "upload _id 'process-list': current_process is a list, not a string",
                 "upload _id 'two-fields': current_process is an int, not a string; heartbeat is a str, "
                 "not a date",
                 "entry _id 'entry-name': path is an int, not a string"):
        assert line in ran.out, (line, ran.out)
    as_json = json.loads(datafix(database, "verify", "--json").out)
    counts = {u["collection"]: u["count"] for u in as_json["unreadable"]}
    assert counts == {"upload": 6, "entry": 1} and as_json["ok"] is False
    database.upload.delete_many({"_id": {"$in": list(bad)}})
    database.entry.delete_many({})
    fine = datafix(database, "verify")
    assert fine.code == 0 and "0 unreadable" in fine.out, fine


def test_the_checked_fields_follow_the_proc_model():
    expected = {e.name: e.word for e in readable.expectations(Proc)}
    assert expected["current_process_step"] == expected["current_process"] == "a string"
    assert expected["attempt"] == "a number" and expected["errors"] == "an array"
    assert expected["last_status_change"] == expected["create_time"] == "a date"
    assert expected["process_args"] == "an embedded document"
    assert set(expected) == {spec.db_field for name, spec in Proc._fields.items() if name != "id"}


@pytest.mark.real_server
def test_a_file_that_exits_at_import_stops_a_server_start_through_the_guard(database, tmp_path):
    app = sequence_dir(tmp_path, "app")
    path = app / "0001_bad.py"
    path.write_text(BODIES["sys.exit(0)"])
    env = {**_env(support.database_uri(database.name)), "PROC_DATAFIX_VERSIONS": str(app),
           "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_HEARTBEAT_INTERVAL": "0.3"}
    started = subprocess.run([venv_bin("procctl"), "monitor", "--once"], env=env, capture_output=True,
                             text=True, timeout=120, cwd=PROJECT_DIR)
    assert started.returncode == 2, started
    assert f"datafix {path} cannot be loaded: SystemExit(0)" in started.stderr, started.stderr
