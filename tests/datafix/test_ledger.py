"""The stricter ledger: changed files are errors (accept, --allow-changed), stamp, history,
application sequences (--versions, PROC_DATAFIX_VERSIONS, VERSION as sequence:id) and the
bad input of each, through ``procctl datafix`` (CliRunner) and, on the real tier, as
subprocesses in the form docs/datafix.md gives them."""
from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess

import pytest
from click.testing import CliRunner

import legacy_data
from datafix_toys import add_toy, sequence_dir
from migrations import command, guard
from migrations.ledger import COLLECTION as LEDGER
from migrations.lock import COLLECTION as LOCK
from proc.cli import cli
from proc.exceptions import ConfigurationError
from support import MODELS_DIR, PROJECT_DIR, venv_bin

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))  # datafix_toys


def datafix(*args, env=None):
    return CliRunner().invoke(cli, ["datafix", *args], catch_exceptions=False, env=env)


@pytest.fixture
def app(tmp_path):
    """An application sequence ``app`` with toys 0001 and 0002."""
    return sequence_dir(tmp_path, "app", "0001", "0002")


def entry(database, label):
    return database[LEDGER].find_one({"_id": label})


def nothing_written(database, before):
    assert list(database[LEDGER].find({})) == before
    assert database[LOCK].count_documents({}) == 0


# -- a changed applied file is an error ----------------------------------------------------------


def test_a_changed_applied_file_fails_status_verify_and_upgrade_until_accepted(database, app):
    v = ["--versions", str(app)]
    database.upload.insert_one({"_id": 1, "toy_0001": 1, "process_status": "READY"})
    assert datafix(*v, "upgrade", "--yes").exit_code == 0
    assert datafix(*v, "status").exit_code == 0
    path = app / "0001_toy.py"
    old = entry(database, "app:0001")["checksum"]
    path.write_text(path.read_text() + "\n# a later edit\n")
    for name in ("status", "verify"):
        result = datafix(*v, name)
        assert result.exit_code == 1, result.output
        assert "datafix app:0001" in result.output and str(path) in result.output, result.output
        assert "procctl datafix accept app:0001" in result.output
    as_json = json.loads(datafix(*v, "status", "--json").stdout)
    assert as_json["ok"] is False and any("app:0001" in e for e in as_json["errors"])
    # upgrade refuses and writes nothing, though a document waits for the changed datafix
    database.upload.insert_one({"_id": 2, "toy_0001": 1, "process_status": "READY"})
    before = list(database[LEDGER].find({}))
    refused = datafix(*v, "upgrade", "--yes")
    assert refused.exit_code == 1 and "--allow-changed" in refused.output
    nothing_written(database, before)
    assert database.upload.find_one({"_id": 2})["toy_0001"] == 1
    # --allow-changed runs it and says so in the run summary; the checksum is not accepted
    allowed = datafix(*v, "upgrade", "--yes", "--allow-changed", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert database.upload.find_one({"_id": 2})["done_0001"] is True
    after = entry(database, "app:0001")
    assert after["runs"][-1]["allowed_changed"] is True and after["runs"][0]["allowed_changed"] is False
    assert after["checksum"] == old and datafix(*v, "status").exit_code == 1
    # accept records the new checksum and keeps the old one
    accepted = datafix(*v, "accept", "app:0001")
    assert accepted.exit_code == 0 and "accepted" in accepted.output
    final = entry(database, "app:0001")
    [record] = final["accepted"]
    assert record["old"] == old and record["new"] == final["checksum"] != old
    assert record["user"] == getpass.getuser() and record["host"] == socket.gethostname()
    assert datafix(*v, "status").exit_code == 0 and datafix(*v, "verify").exit_code == 0
    assert "unchanged" in datafix(*v, "accept", "app:0001").output


def test_a_file_changed_after_a_rollback_is_no_error(database, app):
    v = ["--versions", str(app)]
    assert datafix(*v, "upgrade", "--yes").exit_code == 0
    assert datafix(*v, "downgrade", "--yes", "--to", "0001").exit_code == 0
    (app / "0002_toy.py").write_text((app / "0002_toy.py").read_text() + "\n# fixed\n")
    assert datafix(*v, "status").exit_code == 0
    assert datafix(*v, "upgrade", "--yes").exit_code == 0


# -- stamp ---------------------------------------------------------------------------------------


def test_stamp_counts_as_applied_in_status_upgrade_verify_and_downgrade(database, app):
    v = ["--versions", str(app)]
    result = datafix(*v, "stamp", "app:0002")
    assert result.exit_code == 0 and "stamped" in result.output
    stamped = entry(database, "app:0002")
    assert stamped["state"] == "stamped" and stamped["sequence"] == "app" and stamped["id"] == "0002"
    assert stamped["host"] == socket.gethostname() and stamped["user"] == getpass.getuser()
    assert stamped["stamped_at"] is not None
    status = json.loads(datafix(*v, "status", "--json").stdout)
    assert {d["id"]: d["state"] for d in status["datafixes"]}["app:0002"] == "stamped"
    up = command.upgrade(versions=app)
    assert {r.revision: r.state for r in up.reports} == \
        {"0001": "applied", "app:0001": "applied", "app:0002": "nothing to do"}
    assert entry(database, "app:0002")["state"] == "stamped"  # not run
    assert datafix(*v, "verify").exit_code == 0
    assert "already stamped" in datafix(*v, "stamp", "app:0002").output
    # the newest done datafix is the stamped one: downgrade reverts it
    database.upload.insert_one({"_id": 1, "done_0002": True})
    down = command.downgrade(versions=app)
    assert [r.revision for r in down.reports] == ["app:0002"]
    assert entry(database, "app:0002")["state"] == "rolled back"
    assert "done_0002" not in database.upload.find_one({"_id": 1})


def test_the_startup_guard_refuses_an_unfinished_datafix_until_it_is_run_or_stamped(database, app,
                                                                                     monkeypatch):
    monkeypatch.setenv("PROC_DATAFIX_VERSIONS", str(app))
    assert command.upgrade().ok  # reads PROC_DATAFIX_VERSIONS too
    guard.refuse_if_legacy("The worker")
    database[LEDGER].update_one({"_id": "app:0002"}, {"$set": {"state": "failed"}})
    with pytest.raises(ConfigurationError, match=r"datafix app:0002 \(failed\) did not finish.*stamp"):
        guard.refuse_if_legacy("The worker")
    assert datafix("stamp", "app:0002").exit_code == 0
    guard.refuse_if_legacy("The worker")
    # the guard reads the application's directory: its documents in the old shape refuse too
    database.upload.insert_one({"_id": 1, "toy_0001": 1, "process_status": "READY"})
    with pytest.raises(ConfigurationError, match=r"upload \(datafix app:0001"):
        guard.refuse_if_legacy("The worker")


# -- history -------------------------------------------------------------------------------------


def test_history_lists_every_entry_with_the_ledgers_state_names(database, app):
    v = ["--versions", str(app)]
    database.upload.insert_many([{"_id": i, "toy_0001": 1, "process_status": "READY"} for i in range(3)])
    assert datafix(*v, "upgrade", "--yes", "--to", "app:0001").exit_code == 0
    assert datafix(*v, "stamp", "app:0002").exit_code == 0
    assert datafix(*v, "downgrade", "--yes").exit_code == 0  # reverts the stamped app:0002
    path = app / "0001_toy.py"
    path.write_text(path.read_text() + "\n# reviewed edit\n")
    assert datafix(*v, "accept", "app:0001").exit_code == 0
    # an entry written before run summaries existed still shows what it holds
    database[LEDGER].insert_one({"_id": "0009", "state": "applied", "direction": "upgrade",
                                 "host": "old-host", "description": "gone"})
    rows = json.loads(datafix(*v, "history", "--json").stdout)
    done = [(r["version"], r["done"]) for r in rows if not r.get("from_entry")]
    assert done == [("0001", "applied"), ("app:0001", "applied"), ("app:0002", "stamped"),
                    ("app:0002", "rolled back"), ("app:0001", "accepted")]
    migrated = rows[1]
    assert migrated["changed"] == 3 and migrated["user"] == getpass.getuser()
    assert migrated["host"] == socket.gethostname() and migrated["duration_s"] >= 0
    assert migrated["when"]
    [old] = [r for r in rows if r.get("from_entry")]
    assert old["version"] == "0009" and old["done"] == "applied" and old["host"] == "old-host"
    table = datafix(*v, "history")
    assert table.exit_code == 0
    for word in ("applied", "stamped", "rolled back", "accepted", "app:0002", "old-host"):
        assert word in table.output
    database[LEDGER].delete_many({})
    assert "the ledger is empty" in datafix("history").output


# -- sequences -----------------------------------------------------------------------------------


def test_application_sequences_keep_their_own_ids_and_run_after_procs_in_the_order_given(database,
                                                                                          tmp_path):
    legacy_data.populate(database, 5, processing=False, odd=False)
    first = sequence_dir(tmp_path, "zeta", "0001")
    second = sequence_dir(tmp_path, "alpha", "0001", "0002")
    versions = f"{first}:{second}"
    result = command.upgrade(versions=versions)
    assert [r.revision for r in result.reports] == ["0001", "zeta:0001", "alpha:0001", "alpha:0002"]
    labels = {d["_id"]: d["sequence"] for d in database[LEDGER].find({})}
    assert labels == {"0001": "proc", "zeta:0001": "zeta", "alpha:0001": "alpha", "alpha:0002": "alpha"}
    # backups of an application's 0001 do not mix with proc's
    assert datafix("--versions", versions, "downgrade", "--yes", "--to", "zeta:0001").exit_code == 0
    assert entry(database, "alpha:0001")["state"] == "rolled back"
    assert entry(database, "0001")["state"] == "applied"
    # proc's directory given again is not a second sequence
    assert datafix("--versions", f"{command.script_module.VERSIONS_DIR}:{first}", "status").exit_code == 0


def test_a_ledger_keyed_by_bare_ids_reads_as_the_proc_sequence(database, app):
    proc_file = command.script_module.discover()[0]
    database[LEDGER].insert_one({"_id": "0001", "state": "applied", "direction": "upgrade",
                                 "checksum": proc_file.checksum, "description": proc_file.description})
    result = command.upgrade(versions=app)
    assert {r.revision: r.state for r in result.reports}["0001"] == "nothing to do"
    status = json.loads(datafix("--versions", str(app), "status", "--json").stdout)
    assert status["datafixes"][0]["id"] == "0001" and status["datafixes"][0]["state"] == "applied"
    assert "already applied" in datafix("stamp", "0001").output
    assert "already applied" in datafix("stamp", "proc:0001").output


# -- bad input: exit 2, naming the problem, nothing written ---------------------------------------


@pytest.mark.parametrize("args,named", [
    (["stamp", "0042"], ["'0042'", "known: 0001, app:0001, app:0002"]),
    (["stamp", "app:0009"], ["'app:0009'", "known: 0001, app:0001, app:0002"]),
    (["stamp", "other:0001"], ["'other'", "known sequences: proc, app"]),
    (["stamp", "app:first"], ["'app:first'", "sequence:id"]),
    (["accept", "0042"], ["'0042'", "known: 0001, app:0001, app:0002"]),
    (["accept", "other:0001"], ["'other'", "known sequences: proc, app"]),
    (["accept", "app:0001"], ["app:0001 is not in the ledger"]),
    (["downgrade", "--yes", "--to", "other:0001"], ["'other'", "known sequences: proc, app"]),
    (["new", "--sequence", "other", "x"], ["'other'", "known sequences: proc, app"]),
])
def test_unknown_versions_and_sequences_exit_2_naming_them(database, app, args, named):
    result = datafix("--versions", str(app), *args)
    assert result.exit_code == 2, result.output
    for text in named:
        assert text in result.output, result.output
    nothing_written(database, [])
    assert sorted(p.name for p in app.iterdir()) == ["0001_toy.py", "0002_toy.py", "sequence.txt"]


def test_two_directories_claiming_one_sequence_exit_2_naming_both(database, tmp_path):
    one = sequence_dir(tmp_path, "one", "0001", marker="shop")
    two = sequence_dir(tmp_path, "two", "0001", marker="shop")
    own = sequence_dir(tmp_path, "own", marker="proc")
    for versions, dirs in ((f"{one}:{two}", (one, two)), (str(own), (command.script_module.VERSIONS_DIR, own))):
        for args in (["status"], ["upgrade", "--yes"], ["stamp", "0001"]):
            result = datafix("--versions", versions, *args)
            assert result.exit_code == 2, result.output
            assert all(str(d) in result.output for d in dirs), result.output
    nothing_written(database, [])


def test_a_missing_or_unnamed_directory_exits_2_naming_it(database, tmp_path):
    missing = tmp_path / "nowhere"
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    for versions, text in ((str(missing), f"{missing} (--versions / PROC_DATAFIX_VERSIONS) does not exist"),
                           (str(unnamed), f"{unnamed / 'sequence.txt'}")):
        for args in (["upgrade", "--yes"], ["stamp", "0001"], ["history"]):
            result = datafix("--versions", versions, *args)
            assert result.exit_code == 2 and text in result.output, result.output
        from_env = datafix("status", env={"PROC_DATAFIX_VERSIONS": versions})
        assert from_env.exit_code == 2 and text in from_env.output
    nothing_written(database, [])


# -- as documented, as subprocesses, on the real server --------------------------------------------


@pytest.mark.real_server
def test_the_ledger_commands_run_as_the_docs_give_them(database, database_uri, tmp_path):
    app = sequence_dir(tmp_path, "myapp", "0001")
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models",
           "PYTHONPATH": os.pathsep.join([TESTS_DIR, MODELS_DIR]), "PROC_DATAFIX_VERSIONS": str(app)}

    def run(*args):
        return subprocess.run([venv_bin("procctl"), "datafix", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=PROJECT_DIR)

    database["e2e_job"].insert_one({"_id": 1, "process_status": "READY", "done_0001": True})
    assert run("stamp", "0001").returncode == 0  # proc's own, as the README gives it
    assert run("stamp", "myapp:0001").returncode == 0
    up = run("upgrade", "--yes", "--json")
    assert up.returncode == 0
    assert {d["id"]: d["state"] for d in json.loads(up.stdout)["datafixes"]}["myapp:0001"] == "nothing to do"
    assert run("verify").returncode == 0
    assert run("downgrade", "--yes", "--to", "0001").returncode == 0
    assert "done_0001" not in database["e2e_job"].find_one({"_id": 1})
    database["e2e_job"].update_one({"_id": 1}, {"$set": {"toy_0001": 1}})
    assert run("verify").returncode == 1
    assert run("upgrade", "--yes").returncode == 0
    assert database["e2e_job"].find_one({"_id": 1})["done_0001"] is True
    path = app / "0001_toy.py"
    path.write_text(path.read_text() + "\n# edited\n")
    status = run("status")
    assert status.returncode == 1 and "myapp:0001" in status.stdout and str(path) in status.stdout
    assert run("upgrade", "--yes").returncode == 1
    assert run("upgrade", "--yes", "--allow-changed").returncode == 0
    assert run("accept", "myapp:0001").returncode == 0
    assert run("verify").returncode == 0
    new = subprocess.run([venv_bin("procctl"), "datafix", "--versions", str(app), "new", "--sequence",
                          "myapp", "backfill owner"], env={**env, "PROC_DATAFIX_VERSIONS": ""},
                         capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR)
    assert new.returncode == 0 and (app / "0002_backfill_owner.py").exists(), new.stderr
    history = run("history", "--json")
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert [r["done"] for r in rows if r["version"] == "myapp:0001"] == \
        ["stamped", "rolled back", "applied", "accepted"]
    assert [r["done"] for r in rows if r["version"] == "0001"] == ["stamped"]
    assert "accepted" in run("history").stdout
    bad = run("stamp", "myapp:0042")
    assert bad.returncode == 2 and "'myapp:0042'" in bad.stderr and "myapp:0001" in bad.stderr


@pytest.mark.real_server
def test_a_server_reads_every_configured_directory_and_starts_once_the_datafix_is_stamped(
        database, database_uri, tmp_path):
    app = sequence_dir(tmp_path, "myapp", "0001")
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models",
           "PYTHONPATH": os.pathsep.join([TESTS_DIR, MODELS_DIR]), "PROC_DATAFIX_VERSIONS": str(app), "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_HEARTBEAT_INTERVAL": "0.3"}

    def run(*args):
        return subprocess.run([venv_bin("procctl"), *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=PROJECT_DIR)

    assert run("datafix", "upgrade", "--yes").returncode == 0
    database[LEDGER].update_one({"_id": "myapp:0001"}, {"$set": {"state": "failed"}})
    refused = run("monitor", "--once")
    assert refused.returncode == 2 and "datafix myapp:0001 (failed) did not finish" in refused.stderr
    assert run("datafix", "stamp", "myapp:0001").returncode == 0
    started = run("monitor", "--once")
    assert started.returncode == 0, started.stderr
    database["e2e_job"].insert_one({"_id": 1, "toy_0001": 1, "process_status": "READY"})
    legacy = run("monitor", "--once")
    assert legacy.returncode == 2 and "e2e_job (datafix myapp:0001" in legacy.stderr


@pytest.mark.real_server
def test_the_startup_check_is_bounded_by_time_however_large_the_collection(database, database_uri):
    """A search for the old shape that finds nothing reads the whole collection; with tens of
    millions of processes a start would take minutes. Here 10,000 current documents and a
    20 ms bound: the server cuts each read off (maxTimeMS), a datafix the ledger has no record
    of refuses the start, one it records as done starts with a warning."""
    database["e2e_job"].insert_many([{"process_status": "SUCCESS", "current_process": "work"}
                                     for _ in range(10_000)])
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models",
           "PYTHONPATH": os.pathsep.join([TESTS_DIR, MODELS_DIR]), "PROC_DATAFIX_CHECK_TIMEOUT": "0.02",
           "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_HEARTBEAT_INTERVAL": "0.3"}

    def run(*args, **extra):
        return subprocess.run([venv_bin("procctl"), *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120, cwd=PROJECT_DIR)

    refused = run("monitor", "--once")
    assert refused.returncode == 2, refused.stderr
    assert "the ledger has no record of datafix(es) for e2e_job (datafix 0001)" in refused.stderr
    assert "within 0.02 s (PROC_DATAFIX_CHECK_TIMEOUT)" in refused.stderr
    assert "Run `procctl datafix upgrade` once" in refused.stderr

    assert run("datafix", "upgrade", "--yes").returncode == 0
    started = run("monitor", "--once")
    assert started.returncode == 0, started.stderr
    assert "did not finish within 0.02 s (PROC_DATAFIX_CHECK_TIMEOUT) in e2e_job (datafix 0001)" in started.stderr
    unhurried = run("monitor", "--once", PROC_DATAFIX_CHECK_TIMEOUT="60")  # the whole read: nothing to say
    assert unhurried.returncode == 0 and "did not finish" not in unhurried.stderr, unhurried.stderr
