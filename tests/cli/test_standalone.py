"""``procctl standalone``: a database, a broker, a worker, the sweep and the page in one command.

The end-to-end tests (real tier) start it as a process of its own on a temporary data
directory, with a private redis-server (``PROC_STANDALONE_LOCAL_REDIS=none``: never the
shared Redis on 6379), and join it from other processes through the environment it prints.
The bad inputs fail before anything starts and run on both tiers.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import sys
import urllib.request

import pytest

import support

MODELS = "proc.demo.models,standalone_models"

SEND_PRECHECKS = """
from proc.store import db
from proc.demo.models import Precheck
db.connect()
for i in range(20):
    check = Precheck(project_id="standalone", check=f"check-{i}")
    check.save()
    check.run()
"""

SEND_HOLD = """
import sys
from proc.store import db
from standalone_models import Hold
db.connect()
hold = Hold(release_path=sys.argv[1])
hold.save()
hold.hold()
"""


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MONGODB_URI", "CELERY_BROKER_URL", "PROC_MODELS")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [support.MODELS_DIR, env.get("PYTHONPATH")])),
               PROC_STANDALONE_LOCAL_REDIS="none", **extra)
    return env


class Standalone:
    """One ``procctl standalone`` run, its console in a file."""

    runs = 0

    def __init__(self, data_dir, port: int, *args, env: dict | None = None):
        Standalone.runs += 1
        self.console = os.path.join(os.path.dirname(str(data_dir)), f"console-{Standalone.runs}.log")
        self.proc = support.spawn([support.venv_bin("procctl"), "standalone", "--data-dir", str(data_dir),
                                   "--port", str(port), "--concurrency", "2", "--models", MODELS, *args],
                                  env=env or base_env(), log=self.console)
        self.port = port

    def output(self) -> str:
        with open(self.console, errors="replace") as f:
            return f.read()

    def wait_output(self, text: str, count: int = 1, timeout: float = 60.0) -> str:
        def seen():
            out = self.output()
            if out.count(text) >= count:
                return out
            if self.proc.poll() is not None:
                pytest.fail(f"procctl standalone exited ({self.proc.returncode}) before {text!r}:\n{out}")
            return None
        return support.wait_for(seen, timeout=timeout, interval=0.05, message=f"{text!r} on the console")

    def wait_up(self) -> dict:
        self.wait_output("everything is up", timeout=90)
        return dict(re.findall(r"^    export (\w+)=(\S+)$", self.output(), re.M))

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"^\[{name}\] (?:re)?started .*, pid (\d+) ", self.output(), re.M)]

    def status_counts(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?workers=0", timeout=10) as r:
            return json.load(r)["counts"]

    def wait_counts(self, status: str, n: int, timeout: float = 60.0):
        support.wait_for(lambda: self.status_counts().get(status) == n, timeout=timeout, interval=0.2,
                         message=f"/api/status to count {n} {status} (last: {self.status_counts()})")


def session_members(leaders) -> set[int]:
    """Every live process in the sessions of ``leaders`` (each child is a session leader)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in leaders and fields[0] != "Z":
                found.add(int(entry))
    return found


def run_caller(script: str, exports: dict, *args, tmp_path) -> None:
    log = str(tmp_path / "caller.log")
    caller = support.spawn([sys.executable, "-c", script, *args], env=base_env(**exports), log=log)
    assert caller.wait(timeout=60) == 0, open(log).read()


def refusal(tmp_path, *args, env=None, data_dir=None) -> str:
    """Run ``procctl standalone`` expecting it to refuse: exit 2, one ``Error:`` line."""
    log = str(tmp_path / "refusal.log")
    if os.path.exists(log):
        os.remove(log)
    data = str(data_dir or tmp_path / "data")
    proc = support.spawn([support.venv_bin("procctl"), "standalone", "--data-dir", data, *args],
                         env=env or base_env(), log=log)
    code = proc.wait(timeout=60)
    out = open(log).read()
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code == 2 and len(errors) == 1 and out.rstrip().endswith(errors[0]), out
    return errors[0]


@pytest.mark.real_server
def test_runs_processes_stops_in_order_and_keeps_the_data(tmp_path):
    data, port = tmp_path / "data", support.free_port()
    first = Standalone(data, port)
    exports = first.wait_up()
    assert set(exports) == {"MONGODB_URI", "CELERY_BROKER_URL", "PROC_MODELS"}
    assert exports["PROC_MODELS"] == MODELS
    assert f"http://127.0.0.1:{port}/projects/admin/check-status/" in first.output()
    assert sorted(os.listdir(data / "logs")) == ["broker.log", "db.log", "sweep.log", "web.log", "worker.log"]

    # A second run on the same data directory refuses, naming the first; the port is taken.
    assert f"another procctl standalone (pid {first.proc.pid}) is running on {data}" in refusal(
        tmp_path, "--port", str(support.free_port()), data_dir=data)
    assert f"port {port} (127.0.0.1) is already in use" in refusal(
        tmp_path, "--port", str(port), data_dir=tmp_path / "other")

    run_caller(SEND_PRECHECKS, exports, tmp_path=tmp_path)
    first.wait_counts("SUCCESS", 20)

    release = tmp_path / "release"
    run_caller(SEND_HOLD, exports, str(release), tmp_path=tmp_path)
    first.wait_counts("RUNNING", 1)
    leaders = {first.proc.pid, *(pid for name in ("db", "broker", "worker", "sweep", "web")
                                 for pid in first.pids(name))}
    children = session_members(leaders) | leaders
    assert len(children) >= 5 + 2 + 2  # the five, the worker's 2 pool processes, gunicorn's 2 workers

    os.kill(first.proc.pid, signal.SIGINT)
    out = first.wait_output("[worker] warm shutdown: waiting up to 60 s for 1 running process(es) "
                            "to finish: standalone_hold/")
    assert "[web] stopped" in out and "[sweep] stopped" in out and "[worker] stopped" not in out
    release.write_text("go")
    assert first.proc.wait(timeout=60) == 0, first.output()
    out = first.output()
    order = [out.index(f"[{name}] stopped") for name in ("web", "worker", "broker", "db")]
    assert order == sorted(order), out
    assert out.index("[sweep] stopped") < order[1]
    assert "killed" not in out.split("stopping everything")[1], out
    assert [pid for pid in children if support.alive(pid)] == []

    # Started again on the same directory: the same database port, the documents are there.
    second = Standalone(data, port)
    again = second.wait_up()
    assert again["MONGODB_URI"] == exports["MONGODB_URI"]
    assert again["CELERY_BROKER_URL"] == exports["CELERY_BROKER_URL"]
    second.wait_counts("SUCCESS", 21, timeout=15)  # 20 prechecks and the process the stop waited for
    import pymongo

    client = pymongo.MongoClient(again["MONGODB_URI"], serverSelectionTimeoutMS=5000)
    try:
        assert client.proc.precheck.count_documents({"process_status": "SUCCESS"}) == 20
        assert client.proc.standalone_hold.find_one()["current_process_step"] == "released"
    finally:
        client.close()

    # Stopped while a process runs that will not finish: a second Ctrl-C kills at once.
    run_caller(SEND_HOLD, again, str(tmp_path / "never"), tmp_path=tmp_path)
    second.wait_counts("RUNNING", 1)
    leaders = {second.proc.pid, *(pid for name in ("db", "broker", "worker", "sweep", "web")
                                  for pid in second.pids(name))}
    children = session_members(leaders) | leaders
    os.kill(second.proc.pid, signal.SIGTERM)
    second.wait_output("[worker] warm shutdown: waiting up to 60 s for 1 running process(es)")
    os.kill(second.proc.pid, signal.SIGINT)
    assert second.proc.wait(timeout=30) == 0, second.output()
    out = second.output()
    for name in ("worker", "broker", "db"):
        assert re.search(rf"^\[{name}\] killed at once \(pid {second.pids(name)[-1]} and its process group\)$",
                         out, re.M), out
    assert "[worker] stopped" not in out and "[db] stopped" not in out
    assert [pid for pid in children if support.alive(pid)] == []


@pytest.mark.real_server
def test_a_dead_component_is_restarted_then_everything_stops_with_the_reason(tmp_path):
    run = Standalone(tmp_path / "data", support.free_port(), "--shutdown-timeout", "1")
    exports = run.wait_up()

    # The worker killed as by the OOM killer: reported, restarted, and it works again.
    os.kill(run.pids("worker")[0], signal.SIGKILL)
    run.wait_output("[worker] died: killed by SIGKILL (the OOM killer sends this)")
    run.wait_output("[worker] ready after", count=2)
    assert "restarting (1 of 3 restarts allowed a minute)" in run.output()
    run_caller(SEND_HOLD, exports, str(tmp_path / "never"), tmp_path=tmp_path)
    run.wait_counts("RUNNING", 1)
    leaders = {run.proc.pid, *(pid for name in ("db", "broker", "worker", "sweep", "web")
                               for pid in run.pids(name))}
    children = session_members(leaders) | leaders

    # The sweep dies four times within a minute: everything stops, saying why.
    for n in range(1, 5):
        run.wait_output("[sweep] started" if n == 1 else "[sweep] restarted", count=1 if n == 1 else n - 1)
        os.kill(run.pids("sweep")[-1], signal.SIGKILL)
        run.wait_output("[sweep] died: killed by SIGKILL", count=n)
    assert run.proc.wait(timeout=60) == 1, run.output()
    out = run.output()
    assert "stopping everything (sweep died 4 times within a minute (last: killed by SIGKILL))" in out
    assert re.search(r"\[worker\] still running after 1 s: standalone_hold/\w+ \(", out), out
    assert out.rstrip().endswith("Error: sweep died 4 times within a minute (last: killed by SIGKILL)")
    children |= set(run.pids("worker")) | set(run.pids("sweep"))
    assert [pid for pid in children if support.alive(pid)] == []


def test_refuses_a_data_directory_it_cannot_write(tmp_path):
    if os.geteuid() == 0:  # root writes through any mode bits: take a place nobody may write
        target = "/sys/proc-standalone-test"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "data")
    assert refusal(tmp_path, data_dir=target).startswith(f"Error: --data-dir {target} is not writable (")


def test_refuses_a_data_directory_another_run_holds(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "standalone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        assert refusal(tmp_path, data_dir=data) == (
            f"Error: another procctl standalone (pid 4242) is running on {data} (lock file "
            f"{data}/standalone.lock); stop it first, or use another --data-dir")


def test_refuses_models_that_do_not_import(tmp_path):
    assert refusal(tmp_path, "--models", "proc.demo.models,no_such_models_module") == (
        "Error: --models: module 'no_such_models_module' does not import "
        "(ModuleNotFoundError: No module named 'no_such_models_module')")


def test_refuses_a_port_in_use_without_picking_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert refusal(tmp_path, "--port", str(port)) == (
            f"Error: port {port} (127.0.0.1) is already in use; stop what uses it or choose "
            "another with --port")


def test_without_any_redis_it_says_how_to_install_one(tmp_path):
    env = base_env(PATH=os.path.dirname(sys.executable))  # no redis-server on the PATH
    assert "sudo apt-get install redis-server" in refusal(tmp_path, "--port", str(support.free_port()),
                                                          env=env)


@pytest.mark.real_server
def test_the_startup_checks_refuse_documents_in_the_old_shape(tmp_path, database, database_uri):
    database["upload"].insert_one({"name": "old", "paths": [], "tasks": [], "tasks_status": "CREATED"})
    error = refusal(tmp_path, "--port", str(support.free_port()), env=base_env(MONGODB_URI=database_uri))
    assert error.startswith("Error: procctl standalone (its worker, sweep and status page) cannot start: "
                            "documents are still in the shape of the previous version in upload")
    assert "procctl datafix upgrade" in error


def test_the_broker_is_the_one_configured_else_the_local_one_else_a_private_one(tmp_path, redis_url):
    from proc.cli.standalone import choose_broker
    from proc.exceptions import ConfigurationError

    dead = f"redis://127.0.0.1:{support.free_port()}/0"
    assert choose_broker(str(tmp_path), {"CELERY_BROKER_URL": redis_url}) == (redis_url, None)
    with pytest.raises(ConfigurationError, match="does not answer"):
        choose_broker(str(tmp_path), {"CELERY_BROKER_URL": dead})
    assert choose_broker(str(tmp_path), {"PROC_STANDALONE_LOCAL_REDIS": redis_url}) == (redis_url, None)
    url, binary = choose_broker(str(tmp_path), {"PROC_STANDALONE_LOCAL_REDIS": dead})
    assert binary and binary.endswith("redis-server") and url != dead
    assert choose_broker(str(tmp_path), {"PROC_STANDALONE_LOCAL_REDIS": "none"}) == (url, binary)  # same port
