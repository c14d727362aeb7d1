"""The real tier's watchdog (``support.Watchdog``): a SecantusDB that stops working is replaced,
so a hung server fails the test it hangs instead of holding the whole run. The hangs are real:
the server process stopped with SIGSTOP (its socket stays open and answers nothing), and a
server whose writes block while it still answers pings (SecantusDB's ``failCommand`` fail
point with ``blockConnection``)."""
from __future__ import annotations

import contextlib
import os
import signal

import pytest

import support
from support import SecantusServer, Watchdog, wait_for

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]


@contextlib.contextmanager
def watched(*, test_commands: bool = False, **options):
    """A SecantusDB of its own under a watchdog (``options``), whose reports and told URLs are
    kept: ``(server, watchdog, reports, told)``; both stopped afterwards."""
    server = SecantusServer(test_commands=test_commands).start()
    reports, told = [], []
    watchdog = Watchdog(server, report=reports.append, on_replace=told.append, **options).start()
    try:
        yield server, watchdog, reports, told
    finally:
        watchdog.stop()
        server.cleanup()


def test_a_server_that_answers_nothing_is_killed_and_replaced_on_the_same_port():
    with watched(interval=0.3, timeout=0.5, misses=3) as (server, watchdog, reports, told):
        hung = server.process
        wait_for(lambda: watchdog.answers(), timeout=10, message="the server answers before the hang")
        assert watchdog.replaced == 0
        os.kill(hung.pid, signal.SIGSTOP)
        wait_for(lambda: watchdog.replaced == 1, timeout=30, message="the watchdog replaces the hung server")
        assert hung.poll() is not None, "the hung server is gone"
        assert server.process is not hung and server.process.poll() is None
        assert watchdog.answers(), "the fresh server answers on the same port"
        assert server.url.endswith(f":{server.port}/") and server.storage == "db-2" and told == [server.url]
        said = "".join(reports)
        assert f"pid {hung.pid}: state T (stopped)" in said, said  # what the hung server looked like
        assert "answered none of 3 asks" in said and f"a fresh secantusd-py answers at {server.url}" in said, said


def test_a_server_that_exits_is_replaced_at_its_first_missed_ask():
    with watched(interval=0.3, timeout=0.5, misses=1000) as (server, watchdog, reports, told):
        dead = server.process
        os.kill(dead.pid, signal.SIGKILL)
        wait_for(lambda: watchdog.replaced == 1, timeout=30, message="the replacement of the exited server")
        assert watchdog.answers() and server.process is not dead
        assert f"and exited with {-signal.SIGKILL}" in "".join(reports)


def test_a_server_that_answers_is_left_alone():
    with watched(interval=0.2, timeout=1.0, misses=2) as (server, watchdog, reports, told):
        process = server.process
        wait_for(lambda: watchdog.pings >= 5, timeout=20, message="five asks of the watchdog")
        assert watchdog.replaced == 0 and server.process is process and process.poll() is None
        assert reports == [] and told == []


def test_a_server_that_answers_pings_but_whose_writes_hang_is_replaced():
    import pymongo

    with watched(test_commands=True, interval=0.3, timeout=0.5, misses=3) as (server, watchdog, reports, told):
        hung = server.process
        wait_for(lambda: watchdog.pings >= 2 and not watchdog.missed, timeout=10, message="two answered asks")
        client = pymongo.MongoClient(server.url, directConnection=True)
        client.admin.command("configureFailPoint", "failCommand", mode="alwaysOn",
                             data={"failCommands": ["update", "find"], "blockConnection": True,
                                   "blockTimeMS": 60_000})
        assert client.admin.command("ping")["ok"] == 1, "pings still answer"
        client.close()
        wait_for(lambda: watchdog.replaced == 1, timeout=30, message="the watchdog replaces the stuck server")
        assert hung.poll() is not None and server.process.poll() is None
        assert told == [server.url] and watchdog.answers() and not watchdog.broken
        assert "(ping, write, read)" in "".join(reports)


INNER = '''
import os, signal
import conftest
from core_models import Job
from support import wait_for


def test_1_the_server_hangs_under_this_test():
    Job(label="on the first server").save()
    os.kill(conftest._server.process.pid, signal.SIGSTOP)
    wait_for(lambda: conftest._watchdog.replaced == 1, timeout=30, message="the replacement")


def test_2_the_next_test_runs_on_the_fresh_server():
    Job(label="written").save()
    assert Job.objects.count() == 1
'''


def test_a_run_whose_server_hangs_goes_on_and_says_why_at_its_end(tmp_path):
    """The watchdog as a real-tier run uses it (conftest): ``pytest --real-server`` as a process
    of its own, whose first test stops the run's server with SIGSTOP; the next test runs on the
    fresh server, and the end of the output says what happened (CI keeps only the end)."""
    import subprocess
    import sys

    (tmp_path / "test_inner.py").write_text(INNER)
    tests = os.path.join(support.PROJECT_DIR, "tests")
    env = {**os.environ, "PROC_TEST_WATCHDOG": "0.3,0.5,3",
           "PYTHONPATH": os.pathsep.join([tests, os.path.join(tests, "models")])}
    env.pop("PROC_TEST_MONGODB_URI", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "--real-server", "-p", "conftest", "-p", "no:cacheprovider",
                             "-c", os.path.join(support.PROJECT_DIR, "pyproject.toml"), "--rootdir", str(tmp_path),
                             "-o", "timeout=60", str(tmp_path / "test_inner.py")],
                            env=env, capture_output=True, text=True, timeout=100, cwd=str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "2 passed" in out, out[-4000:]
    assert "WATCHDOG: the run's SecantusDB was replaced 1 time(s)" in out, out[-4000:]
    summary = out.split("WATCHDOG: the run's SecantusDB was replaced", 1)[1]
    assert "answered none of 3 asks (ping, write, read)" in summary, summary[:4000]
    assert "state T (stopped)" in summary and "py-spy dump" in summary, summary[:4000]


def test_the_watchdogs_asks_are_not_counted_among_a_tests_commands():
    """A test that counts the commands it sends (test_watch_cost, the call counts) shares the
    server with the watchdog; one real-tier run counted its read of the canary."""
    with support.commands_sent() as sent:
        assert support.server_works(support.REAL_SERVER_URI, 5.0)
    # closing its client ends its sessions (endSessions on admin), which reads and writes nothing
    assert [name for name, _ in sent if name != "endSessions"] == []
