"""The tally (``proc.machine.tally``) across real processes: what a SIGKILLed prefork pool
process loses (the counts of the attempts it ended since its last flush, no more); every
other process's counts arrive (with its timer, with the flush a pool process makes when the
worker shuts down, or when a CLI command exits)."""
from __future__ import annotations

import os
import signal

import e2e_models as em
import pytest

from proc.machine import tally
from support import stop, wait_for
from test_e2e import broker, deploy, jobs, status_of  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(240)]


def counted() -> int:
    doc = tally.collection().find_one({"_id": "e2e_job.run|0"}) or {}
    return sum((doc.get("e") or {}).values())


def test_a_pool_process_killed_mid_run_loses_only_its_unflushed_counts(deploy):  # noqa: F811
    # a flush interval longer than the test: the pool process's counts stay in its memory
    d = deploy(PROC_BUCKET_FLUSH="3600")
    worker = d.worker("w1", 1)  # one pool process runs everything
    first = jobs(6)
    d.call(first)
    for doc in first:
        wait_for(lambda doc=doc: status_of(doc)[0] == "SUCCESS", timeout=60, message="the first jobs to end")
    [gated] = jobs(1, wait_for_gate=True)
    d.call([gated])
    [run] = wait_for(lambda: em.runs_of(gated), timeout=30, message="the gated body to start")
    killed = run["pid"]
    assert {em.runs_of(doc)[0]["pid"] for doc in first} == {killed}  # it ended all six
    os.kill(killed, signal.SIGKILL)  # mid-run, before any flush
    # the worker sends the gated process again at once (its pool process died): opened, its
    # second attempt ends on the pool process Celery started in the killed one's place
    em.open_gate(gated)
    wait_for(lambda: status_of(gated) == ("SUCCESS", 2), timeout=60, message="the gated job's attempt 2")
    later = jobs(4)
    d.call(later)
    for doc in later:  # on the pool process Celery started in its place
        wait_for(lambda doc=doc: status_of(doc)[0] == "SUCCESS", timeout=60, message="the later jobs to end")
    assert {em.runs_of(doc)[0]["pid"] for doc in later}.isdisjoint({killed})
    assert [(r["attempt"], r["pid"] == killed) for r in em.runs_of(gated)] == [(1, True), (2, False)]
    assert counted() == 0  # nothing flushed yet: the interval has not passed
    stop(worker, signal.SIGTERM, timeout=60)  # a warm shutdown: the live pool process flushes
    wait_for(lambda: counted() == 5, timeout=30, message="the surviving pool process's five counts")
    # the killed one's six endings, all since its last flush (it never flushed), are the loss
    ended = tally.collection().find_one({"_id": "e2e_job.run|0"})["e"]
    assert ended == {"SUCCESS": 5}


def test_with_a_short_interval_a_killed_pool_process_has_already_flushed_what_it_ended(deploy):  # noqa: F811
    d = deploy(PROC_BUCKET_FLUSH="0.5")
    d.worker("w1", 1)
    first = jobs(5)
    d.call(first)
    wait_for(lambda: counted() == 5, timeout=60, message="the pool process's flush of its five endings")
    [gated] = jobs(1, wait_for_gate=True)
    d.call([gated])
    [run] = wait_for(lambda: em.runs_of(gated), timeout=30, message="the gated body to start")
    os.kill(run["pid"], signal.SIGKILL)
    em.open_gate(gated)  # its attempt 2, which the worker sends at once, ends too
    later = jobs(3)
    d.call(later)
    wait_for(lambda: counted() == 9, timeout=60, message="the new pool process's flush, the worker still up")
    assert status_of(gated) == ("SUCCESS", 2)


def test_a_cli_action_that_ends_a_process_is_counted_by_the_cli_process_itself(database_uri, redis_url):
    import subprocess

    from api_seed import seed
    from proc.demo.models import Precheck
    from proc.status import ProcessStatus as S
    from support import PROJECT_DIR, venv_bin

    doc_id = seed(Precheck, S.PENDING, age=5)
    env = {**os.environ, "MONGODB_URI": database_uri, "CELERY_BROKER_URL": redis_url,
           "PROC_MODELS": "proc.demo.models", "PROC_BUCKET_FLUSH": "3600"}
    result = subprocess.run([venv_bin("procctl"), "admin", "cancel", "precheck", str(doc_id)], env=env,
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    # flushed when the command exited, long before its flush interval
    total = tally.collection().find_one({"_id": "precheck.run|0"})
    assert total is not None and total["e"] == {"FAILURE": 1}, total
