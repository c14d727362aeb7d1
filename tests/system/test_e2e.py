"""End to end, the way the README runs proc in production, on a real MongoDB server.

Every component is a process of its own, started exactly as the README says:
``celery -A celery_app worker`` (prefork), ``procctl serve`` (gunicorn), ``procctl
monitor``, ``celery -A celery_app beat``, and callers (``e2e_caller.py``). Each test
injects its fault for real (signals, stopped servers) and asserts every process's final
state and how often its body ran (each body records its runs in ``e2e_runs``).

Brokers are private ``redis-server``s (one per test); the rows of the fault table that depend on
the broker also run on a private ``rabbitmq-server`` (``BROKERS``, one node per test). The
database is this test's fresh database on the run's server, or a private SecantusDB where a
test stops it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from bson import ObjectId

import e2e_models as em
import support
from e2e_models import E2EJob, E2ELimited, E2ESilent
from proc import config, registry
from proc.monitor import stuck
from proc.store import db
from support import RabbitMQServer, RedisServer, SecantusServer, free_port, spawn, stop, venv_bin, wait_for

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(240)]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = support.MODELS_DIR  # e2e_models, for every process a test starts


class Deployment:
    """The components of one test, each a process of its own, sharing one environment."""

    def __init__(self, tmp_path, database_uri: str, broker_url: str, **settings):
        self.tmp = tmp_path
        self.database_uri = database_uri
        self.broker_url = broker_url
        self.settings = settings
        self.processes: list[tuple[str, subprocess.Popen]] = []

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "MONGODB_URI": self.database_uri, "CELERY_BROKER_URL": self.broker_url,
            "PROC_MODELS": "e2e_models", "PYTHONPATH": MODELS_DIR,
            "PROC_HEARTBEAT_INTERVAL": "0.3", "PROC_DB_OUTAGE_TIMEOUT": "2",
        })
        env.update({k: str(v) for k, v in self.settings.items()})
        return env

    def log(self, name: str) -> str:
        return str(self.tmp / f"{name}.log")

    def _start(self, name: str, args: list[str], ready: str | None = None, timeout: float = 60):
        proc = spawn(args, env=self.env, log=self.log(name))
        self.processes.append((name, proc))
        if ready:
            wait_for(lambda: support.said(name, proc, self.log(name), ready), timeout=timeout, interval=0.05,
                     message=f"{name} to say {ready!r} (log {self.log(name)})")
        return proc

    def output(self, name: str) -> str:
        return support.read_log(self.log(name))

    def worker(self, name: str = "w1", concurrency: int = 2, *extra: str) -> subprocess.Popen:
        """``celery -A celery_app worker -l INFO`` (prefork), as the README starts it."""
        return self._start(name, [venv_bin("celery"), "-A", "celery_app", "worker", "-l", "INFO",
                                  "-c", str(concurrency), "-n", f"{name}@%h", *extra],
                           ready=f"{name}@")

    def worker_ready(self, name: str) -> None:
        wait_for(lambda: " ready." in self.output(name), timeout=60, message=f"{name} ready")

    def procctl_worker(self, name: str = "w1", concurrency: int = 2) -> subprocess.Popen:
        """``procctl worker -c N``: the same worker, through proc's CLI."""
        return self._start(name, [venv_bin("procctl"), "worker", "-c", str(concurrency)], ready=" ready.")

    def beat(self, name: str = "beat") -> subprocess.Popen:
        """``celery -A celery_app beat``: the monitor's periodic sweep, run by a worker."""
        return self._start(name, [venv_bin("celery"), "-A", "celery_app", "beat", "-l", "INFO",
                                  "-s", str(self.tmp / "beat-schedule")], ready="beat: Starting")

    def serve(self, name: str = "web", *args: str, command=None) -> str:
        """``procctl serve --port P`` (gunicorn); returns the base URL once it answers."""
        port = free_port()
        argv = command(port) if command else [venv_bin("procctl"), "serve", "--port", str(port), *args]
        proc = self._start(name, argv)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._answers(name, proc, url), timeout=60, interval=0.1,
                 message=f"gunicorn on {url}")
        return url

    def _answers(self, name, proc, url) -> bool:
        support.said(name, proc, self.log(name), "")  # fails the test if it exited
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code in (401, 403)  # up, and asking for the token
        except OSError:
            return False

    def monitor(self, name: str = "monitor", interval: float = 0.5) -> subprocess.Popen:
        """``procctl monitor --interval S``."""
        return self._start(name, [venv_bin("procctl"), "monitor", "--interval", str(interval)],
                           ready="monitor: sweeping")

    def call(self, docs, *, check: bool = True) -> subprocess.CompletedProcess:
        """Call ``run()`` on ``docs`` from a caller process of its own."""
        collection = docs[0]._get_collection_name()
        result = subprocess.run([sys.executable, os.path.join(TESTS_DIR, "e2e_caller.py"), collection,
                                 *[str(d.pk) for d in docs]], env=self.env, capture_output=True,
                                text=True, timeout=120, cwd=support.PROJECT_DIR)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def stop_all(self) -> None:
        for _, proc in reversed(self.processes):
            stop(proc, signal.SIGTERM, timeout=20)
            support.kill_group(proc)  # pool processes orphaned by a SIGKILLed main process


BROKERS = pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)
"""The rows of docs/faults.md that depend on the broker run on both; these stop or restart it,
so each RabbitMQ test starts a node of its own (about 5 s)."""
BROKERS_LEFT_BE = pytest.mark.parametrize("broker", ["redis", pytest.param("rabbitmq-vhost", id="rabbitmq")],
                                          indirect=True)
"""The same for rows that leave the broker be: on RabbitMQ a virtual host of its own on the run's
shared private node (``rabbitmq_url``), so no node start per test."""


class SharedBroker:
    """A broker a test may only use (``rabbitmq_url``): its URL, nothing to stop."""

    def __init__(self, url: str):
        self.url = url


@pytest.fixture
def broker(request):
    """A private broker for one test: ``redis-server`` (append-only file on, so a restart can keep
    its data), or with ``BROKERS`` also ``rabbitmq-server`` (durable queues, persistent messages)."""
    if getattr(request, "param", "redis") == "rabbitmq-vhost":
        yield SharedBroker(request.getfixturevalue("rabbitmq_url"))
        return
    if getattr(request, "param", "redis") == "rabbitmq":
        server = RabbitMQServer().start()
    else:
        server = RedisServer(appendonly=True).start()
    yield server
    server.cleanup()


def restart(broker, *, keep_data: bool) -> None:
    """Stop ``broker`` and start it again on the same port, with its data or empty."""
    broker.stop()
    if isinstance(broker, RabbitMQServer):
        broker.start(fresh=not keep_data)
        return
    if not keep_data:
        for name in os.listdir(broker.dir):
            path = os.path.join(broker.dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    broker.start()


def scheme(broker) -> str:
    return "amqp://guest:***@127.0.0.1:" if isinstance(broker, RabbitMQServer) else "redis://127.0.0.1:"


@pytest.fixture
def deploy(tmp_path, database_uri, broker):
    made: list[Deployment] = []

    def make(database_uri=database_uri, broker_url=None, **settings) -> Deployment:
        d = Deployment(tmp_path, database_uri, broker_url or broker.url, **settings)
        made.append(d)
        return d

    registry.load_models(["e2e_models"])
    yield make
    for d in made:
        d.stop_all()


def jobs(n: int = 1, cls=E2EJob, **fields) -> list:
    docs = [cls(**fields) for _ in range(n)]
    for d in docs:
        d.save()
    return docs


def reload(doc):
    return doc.reload()


def status_of(doc) -> tuple[str, int]:
    doc.reload_status()
    return doc.process_status, doc.attempt


def successes(doc) -> int:
    return sum(1 for h in doc.history if h["status"] == "SUCCESS")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


# -- the production path --------------------------------------------------------------------


def test_processes_run_on_prefork_workers_and_the_gunicorn_page_shows_their_transitions(deploy):
    d = deploy()
    d.worker("w1", 2)
    url = d.serve()
    docs = jobs(6, hold=0.2)
    d.call(docs)
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 1), timeout=30, message="SUCCESS")
        assert [r["attempt"] for r in em.runs_of(doc)] == [1]
        assert doc.reload().current_process_step == "last step"
        assert doc.worker_hostname.startswith("w1@")
    pids = {r["pid"] for doc in docs for r in em.runs_of(doc)}
    assert os.getpid() not in pids
    status = get_json(f"{url}/api/status?workers=false")
    assert status["counts"]["SUCCESS"] == 6
    for name in ("w1", "web"):
        assert "MongoClient opened before fork" not in d.output(name), name
    assert "ConnectionFailure" not in d.output("w1")
    shell = subprocess.run([venv_bin("procctl"), "shell"], env=d.env, capture_output=True, text=True,
                           timeout=60, input="print('jobs:', E2EJob.objects(process_status='SUCCESS').count())\n")
    assert shell.returncode == 0 and "jobs: 6" in shell.stdout, shell.stderr


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools_connect_on_their_first_task(deploy, pool):
    d = deploy()
    d.worker("w1", 2, "-P", pool)
    docs = jobs(2, hold=0.1)
    d.call(docs)
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 1), timeout=30, message=f"SUCCESS on {pool}")
        assert len(em.runs_of(doc)) == 1
    assert "MongoClient opened before fork" not in d.output("w1")


def test_gunicorn_api_wsgi_and_procctl_serve_with_a_token_on_every_address(deploy):
    d = deploy(PROC_API_TOKEN="e2e-token-0123456789abcdefghijklmnop")
    url = d.serve("web", "--host", "0.0.0.0")
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{url}/api/status?workers=false")
    assert refused.value.code == 401
    request = urllib.request.Request(f"{url}/api/status?workers=false",
                                     headers={"Authorization": "Bearer e2e-token-0123456789abcdefghijklmnop"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.load(r)["counts"]["READY"] == 0
    plain = d.serve("gunicorn", command=lambda port: [venv_bin("gunicorn"), "api.wsgi:app", "-b",
                                                      f"127.0.0.1:{port}", "-w", "2"])
    jobs(2)
    request = urllib.request.Request(f"{plain}/api/status?workers=false",
                                     headers={"Authorization": "Bearer e2e-token-0123456789abcdefghijklmnop"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.load(r)["counts"]["READY"] == 2
    for name in ("web", "gunicorn"):
        assert "MongoClient opened before fork" not in d.output(name), name


def test_celery_beat_drives_the_sweep_on_a_worker_without_procctl_monitor(deploy):
    d = deploy(PROC_SWEEP_INTERVAL=0.5,
               PROC_KIND_SETTINGS=json.dumps({"e2e_job.run": {"recovery": "fail", "queue_timeout": 1}}))
    docs = jobs(2, hold=0.1)
    d.call(docs)
    d.worker("w1", 1, "-Q", "proc.monitor")  # consumes the monitor's queue only: the jobs stay queued
    d.beat()
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc)[0] == "FAILURE", timeout=30, message="failed by the sweep")
        assert doc.reload().history[-1]["by"] == "monitor" and em.runs_of(doc) == []


def test_a_starting_worker_removes_the_monitor_queues_old_binding_from_the_broker(deploy, broker):
    """The upgrade from a broker an earlier proc set up: proc.monitor bound with key celery too."""
    import redis

    client = redis.Redis.from_url(broker.url)
    legacy, own = b"celery\x06\x16\x06\x16proc.monitor", b"proc.monitor\x06\x16\x06\x16proc.monitor"
    client.sadd("_kombu.binding.celery", legacy, b"celery\x06\x16\x06\x16celery")
    d = deploy()
    d.worker("w1", 1)
    d.worker_ready("w1")
    wait_for(lambda: own in client.smembers("_kombu.binding.celery"), timeout=30, message="the new binding")
    wait_for(lambda: legacy not in client.smembers("_kombu.binding.celery"), timeout=30,
             message="the old binding removed")
    assert "removed the old binding of queue proc.monitor (routing key celery)" in d.output("w1")
    client.close()


@BROKERS_LEFT_BE
def test_a_pool_process_sigkilled_mid_run_is_recovered_by_its_worker_in_seconds(deploy):
    """Heartbeat timeout 10 minutes and no monitor: the worker that saw its pool process die
    applies the policy itself (retry up to max_attempts=2; alert warns and leaves it)."""
    d = deploy(PROC_KIND_SETTINGS=json.dumps({
        "e2e_job.run": {"heartbeat_timeout": 600, "expected_duration": 600, "max_attempts": 2},
        "e2e_limited.run": {"heartbeat_timeout": 600, "expected_duration": 600, "recovery": "alert"}}))
    d.worker("w1", 2)
    [doc] = jobs(1, wait_for_gate=True)
    [watched] = jobs(1, cls=E2ELimited, wait_for_gate=True)
    d.call([doc])
    d.call([watched])
    [first] = wait_for(lambda: em.runs_of(doc), timeout=30, message="the body to start")
    [alerted] = wait_for(lambda: em.runs_of(watched), timeout=30, message="the watched body to start")
    os.kill(first["pid"], signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: status_of(doc) == ("RUNNING", 2), timeout=5, interval=0.05,
             message="attempt 2 RUNNING within 5 s of the kill")
    recovered_in = time.monotonic() - killed
    # the claim (RUNNING, attempt 2) is written before the body starts and records its run
    runs = wait_for(lambda: len(em.runs_of(doc)) == 2 and em.runs_of(doc), timeout=30,
                    message="attempt 2's body to start")
    assert [r["attempt"] for r in runs] == [1, 2] and runs[1]["pid"] != first["pid"]
    [redispatch] = [h for h in doc.reload().history if h["event"] == "redispatch"]
    assert redispatch["by"].startswith("worker:w1@") and redispatch["note"].endswith(": worker heartbeat lost")
    [warning] = doc.warnings
    assert f"pool process {first['pid']} of worker w1@" in warning and warning.endswith("(attempt 2 of 2)")

    os.kill(runs[1]["pid"], signal.SIGKILL)  # max_attempts counts
    wait_for(lambda: status_of(doc) == ("FAILURE", 2), timeout=5, interval=0.05,
             message="FAILURE after max_attempts within 5 s of the second kill")
    assert doc.reload().errors[-1].endswith("gave up after 2 attempt(s) (max_attempts=2)")
    assert [r["attempt"] for r in em.runs_of(doc)] == [1, 2] and successes(doc) == 0

    os.kill(alerted["pid"], signal.SIGKILL)  # policy alert: a warning, nothing else
    wait_for(lambda: reload(watched).warnings, timeout=5, interval=0.05, message="the alert")
    [warning] = watched.warnings
    assert warning.startswith("worker:w1@") and "pool process" in warning
    assert warning.endswith("left alone (recovery policy: alert)")
    assert status_of(watched) == ("RUNNING", 1) and len(em.runs_of(watched)) == 1
    print(f"\nrecovered in {recovered_in:.2f} s after the SIGKILL")


@BROKERS_LEFT_BE
def test_the_workers_main_process_sigkilled_then_a_new_worker_finishes_it(deploy):
    d = deploy(PROC_VISIBILITY_TIMEOUT=6)
    first = d.worker("w1", 1)
    d.monitor()
    [doc] = jobs(1, wait_for_gate=True)
    d.call([doc])
    wait_for(lambda: em.runs_of(doc), timeout=30, message="the body to start")
    os.kill(first.pid, signal.SIGKILL)
    support.kill_group(first)  # its pool process too: the machine lost the whole worker
    em.open_gate(doc)
    d.worker("w2", 1)
    wait_for(lambda: status_of(doc)[0] == "SUCCESS", timeout=60, message="SUCCESS on the new worker")
    assert 1 <= len(em.runs_of(doc)) <= 2
    assert successes(doc) == 1
    assert doc.worker_hostname.startswith("w2@")


@BROKERS_LEFT_BE
def test_sigterm_is_a_warm_shutdown_and_queued_processes_wait_for_the_next_worker(deploy):
    d = deploy()
    first = d.worker("w1", 1)
    [running] = jobs(1, wait_for_gate=True)
    d.call([running])
    wait_for(lambda: em.runs_of(running), timeout=30, message="the first body to start")
    queued = jobs(3, hold=0.1)
    d.call(queued)
    os.kill(first.pid, signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in d.output("w1").lower(), timeout=20, message="warm shutdown")
    em.open_gate(running)
    assert first.wait(timeout=60) == 0
    assert status_of(running) == ("SUCCESS", 1) and len(em.runs_of(running)) == 1
    for doc in queued:
        assert status_of(doc)[0] == "DISPATCHED" and em.runs_of(doc) == []
    d.worker("w2", 2)
    for doc in queued:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 1), timeout=30, message="queued ones run")
        assert len(em.runs_of(doc)) == 1 and doc.worker_hostname.startswith("w2@")


@BROKERS
def test_the_broker_restarted_with_its_data_between_dispatch_and_run_runs_it_once(deploy, broker):
    d = deploy()
    docs = jobs(3, hold=0.1)
    d.call(docs)
    assert all(status_of(doc)[0] == "DISPATCHED" for doc in docs)
    # Same port, same directory: Redis's append-only file, RabbitMQ's durable queue have the messages.
    restart(broker, keep_data=True)
    d.procctl_worker("w1", 2)
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 1), timeout=30, message="run after restart")
        assert len(em.runs_of(doc)) == 1


@BROKERS
def test_the_broker_restarted_empty_the_monitor_sends_it_again_after_its_queue_timeout(deploy, broker):
    d = deploy()
    docs = jobs(2, hold=0.1)
    d.call(docs)
    restart(broker, keep_data=False)  # the messages are gone
    d.worker("w1", 2)
    d.monitor()
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 2), timeout=60,
                 message="sent again as attempt 2 and run")
        assert [r["attempt"] for r in em.runs_of(doc)] == [2]
        [redispatch] = [h for h in doc.history if h["event"] == "redispatch"]
        assert redispatch["by"] == "monitor"


@BROKERS
def test_a_process_held_by_a_broker_outage_is_sent_by_the_first_sweep_after_the_broker_is_back(deploy, broker):
    """Queue timeout 10 minutes: the held process leaves with the first sweep that finds the
    broker answering, not 10 minutes later."""
    d = deploy(PROC_DISPATCH_TIMEOUT=2, PROC_KIND_SETTINGS=json.dumps({"e2e_job.run": {"queue_timeout": 600}}))
    d.worker("w1", 2)
    d.monitor(interval=2)
    broker.stop()
    [doc] = jobs(1, hold=0.1)
    refused = d.call([doc], check=False)
    assert refused.returncode != 0 and "BrokerUnavailable" in refused.stderr, refused.stderr
    assert status_of(doc) == ("PENDING", 1)
    assert doc.reload().current_process_step.startswith(f"broker unreachable at {scheme(broker)}")
    wait_for(lambda: "broker still unreachable, sent once it answers" in d.output("monitor"), timeout=10,
             message="a sweep during the outage to leave it PENDING")
    assert status_of(doc) == ("PENDING", 1)
    broker.start(fresh=True) if isinstance(broker, RabbitMQServer) else restart(broker, keep_data=False)
    back = time.monotonic()
    wait_for(lambda: status_of(doc)[0] != "PENDING", timeout=2 + 3, interval=0.05,
             message="sent within one sweep interval (2 s) of the broker's return")
    sent_in = time.monotonic() - back
    wait_for(lambda: status_of(doc) == ("SUCCESS", 1), timeout=30, message="the held process to run")
    assert len(em.runs_of(doc)) == 1
    [warning] = doc.reload().warnings
    assert warning.startswith("monitor: broker unreachable at ") and warning.endswith("; sending it again")
    print(f"\nsent {sent_in:.2f} s after the broker answered again (sweep interval 2 s)")


def held_until_the_broker_takes_it_back(url: str, within: float) -> tuple[float, str]:
    """The control of the consumer-timeout test: a plain consumer holds one delivery without
    acknowledging it. Returns how long after the delivery the broker closed its channel, and why."""
    import socket

    from kombu import Connection, Queue

    queue = Queue("held-control", routing_key="held-control")
    with Connection(url) as conn:
        channel = conn.channel()
        conn.Producer(channel).publish({"held": True}, routing_key="held-control", declare=[queue])
        delivered = []
        conn.Consumer(queue, channel=channel, callbacks=[lambda body, message: delivered.append(time.monotonic())],
                      prefetch_count=1).consume()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=1)
            except socket.timeout:
                continue
            except Exception as exc:  # the broker closed the channel
                return time.monotonic() - delivered[0], f"{type(exc).__name__}: {exc}"
    pytest.fail(f"the broker left a delivery unacknowledged for {within:g} s: its consumer_timeout is not in force")


def test_a_process_longer_than_rabbitmqs_consumer_timeout_runs_once_and_no_worker_exits(deploy):
    """consumer_timeout 10 s (checked every second, ``channel_tick_interval``: RabbitMQ's default
    tick of 60 s, and its 30-minute timeout, would only make the test longer; the control shows
    the timeout in force), a process of 18 s, and a monitor check due 13 s after the dispatch:
    the process runs once to its end, the worker stays up, and the check, sent with countdowns
    of at most half the timeout (PROC_CONSUMER_TIMEOUT=10), runs."""
    node = RabbitMQServer(consumer_timeout=10000, tick_interval=1000).start()
    try:
        d = deploy(broker_url=node.url, PROC_CONSUMER_TIMEOUT=10, PROC_CHECK_BUCKET=1,
                   PROC_KIND_SETTINGS=json.dumps({"e2e_job.run": {
                       "expected_duration": 13, "recovery": "alert", "heartbeat_timeout": 60}}))
        worker = d.worker("w1", 2)
        [doc] = jobs(1, hold=18)
        d.call([doc])
        wait_for(lambda: em.runs_of(doc), timeout=30, message="the body to start")
        held, why = held_until_the_broker_takes_it_back(node.url, within=30)  # meanwhile, the control
        assert 9.5 <= held <= 14 and "PRECONDITION_FAILED" in why, (held, why)
        wait_for(lambda: status_of(doc) == ("SUCCESS", 1), timeout=40, message="the process to end")
        assert len(em.runs_of(doc)) == 1
        assert [h["status"] for h in doc.reload().history].count("RUNNING") == 1
        [warning] = doc.warnings  # the check due at 13 s ran, and found it running past 13 s
        assert f"{stuck.OVERRAN}: running past its expected duration" in warning, warning
        assert warning.endswith("left alone (recovery policy: alert)")
        assert worker.poll() is None
        assert "PreconditionFailed" not in d.output("w1") and "Unrecoverable" not in d.output("w1")
        print(f"\nthe control's delivery was taken back {held:.1f} s after it was delivered")
    finally:
        node.cleanup()


@pytest.mark.parametrize("broker", [pytest.param("rabbitmq-vhost", id="rabbitmq")], indirect=True)
def test_a_busy_worker_holds_at_most_one_message_it_cannot_start(deploy, broker):
    """proc.run is acknowledged at its start, so the broker would hand a worker whose pool
    processes all run another prefetch's worth; the worker lowers its prefetch instead."""
    from kombu import Connection

    d = deploy()
    d.worker("w1", 2)
    docs = jobs(5, wait_for_gate=True)
    d.call(docs)
    wait_for(lambda: sum(1 for doc in docs if em.runs_of(doc)) == 2, timeout=30, message="two bodies running")

    def waiting() -> int:
        with Connection(broker.url) as conn:
            return conn.default_channel.queue_declare("celery", passive=True).message_count

    wait_for(lambda: waiting() == 2, timeout=10, message="two of the three others left in the queue")
    time.sleep(1)  # noqa: the assertion is that nothing more is taken: look again a moment later
    assert waiting() == 2
    for doc in docs:
        em.open_gate(doc)
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc) == ("SUCCESS", 1), timeout=30, message="each to run")
        assert len(em.runs_of(doc)) == 1


def test_two_monitors_sweeping_at_once_recover_each_process_exactly_once(deploy):
    d = deploy(PROC_KIND_SETTINGS=json.dumps({"e2e_job.run": {"recovery": "fail", "queue_timeout": 1}}))
    docs = jobs(10, hold=0.1)
    d.call(docs)  # no worker: they stay DISPATCHED past their queue timeout
    d.monitor("m1", interval=0.2)
    d.monitor("m2", interval=0.2)
    for doc in docs:
        wait_for(lambda doc=doc: status_of(doc)[0] == "FAILURE", timeout=30, message="failed by a monitor")
    wait_for(lambda: db.database()["proc_recoveries"].count_documents({}) >= 10, timeout=10,
             message="the recovery records")
    for doc in docs:
        fails = [h for h in doc.reload().history if h["event"] == "fail"]
        assert len(fails) == 1 and fails[0]["by"] == "monitor"
        assert db.database()["proc_recoveries"].count_documents({"id": doc.pk}) == 1
        assert em.runs_of(doc) == []
    assert db.database()["proc_recoveries"].count_documents({}) == 10


@BROKERS_LEFT_BE
def test_a_limit_of_4_holds_across_3_callers_and_2_workers(deploy):
    d = deploy()
    d.worker("w1", 3)
    d.worker("w2", 3)
    url = d.serve()
    docs = jobs(50, cls=E2ELimited, hold=0.3)
    callers = [subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, "e2e_caller.py"), "e2e_limited",
                                 *[str(doc.pk) for doc in docs[i::3]]], env=d.env, cwd=support.PROJECT_DIR)
               for i in range(3)]
    support.started.extend(callers)
    peak = [0]

    def all_done() -> bool:
        counts = get_json(f"{url}/api/status?workers=false")["counts"]
        peak[0] = max(peak[0], counts["RUNNING"])
        return counts["SUCCESS"] == 50

    wait_for(all_done, timeout=120, interval=0.05, message="50 SUCCESS on /api/status")
    assert [c.wait(timeout=30) for c in callers] == [0, 0, 0]
    assert 1 <= peak[0] <= 4
    for doc in docs:
        assert len(em.runs_of(doc)) == 1
    assert len({d.reload().worker_hostname.split("@")[0] for d in docs}) == 2  # both workers ran some


# -- the database goes away ------------------------------------------------------------------


@pytest.fixture
def private_db(tmp_path):
    server = SecantusServer(str(tmp_path / "secantus")).start()
    yield server
    server.cleanup()


def test_mongodb_stopped_for_15_s_mid_run_costs_nothing(private_db, deploy):  # workers stop first
    uri = private_db.url + "e2e"
    db.connect(uri)
    d = deploy(database_uri=uri, PROC_DB_OUTAGE_TIMEOUT=40,
               PROC_KIND_SETTINGS=json.dumps({"e2e_job.run": {"heartbeat_timeout": 60},
                                             "e2e_limited.run": {"heartbeat_timeout": 60}}))
    d.worker("w1", 1)
    [doc] = jobs(1, hold=4.0)
    d.call([doc])
    wait_for(lambda: (doc.reload_status().current_process_step or "").startswith("step"), timeout=30,
             message="the body to report a step")
    private_db.stop()
    stopped = __import__("time").monotonic()
    wait_for(lambda: "not written, the database is away" in d.output("w1"), timeout=30,
             message="the worker to notice the outage")
    wait_for(lambda: __import__("time").monotonic() - stopped >= 15, timeout=20, interval=0.2,
             message="15 s of outage")
    private_db.start()
    db.connect(uri)
    wait_for(lambda: status_of(doc)[0] == "SUCCESS", timeout=60, message="SUCCESS after the outage")
    doc.reload()
    assert doc.attempt == 1 and len(em.runs_of(doc)) == 1
    assert doc.current_process_step == "last step"
    assert successes(doc) == 1 and doc.errors == []


def test_a_caller_while_mongodb_is_down_gets_database_unavailable_and_nothing_is_written(private_db, deploy):
    uri = private_db.url.replace("mongodb://", "mongodb://app:s3cret@") + "e2e?authSource=admin"
    db.connect(private_db.url + "e2e")
    [doc] = jobs(1)
    before = E2EJob._get_collection().find_one({"_id": doc.pk})
    d = deploy(database_uri=uri)
    caller = subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, "e2e_caller.py"), "--wait", "e2e_job",
                               str(doc.pk)], env={**d.env, "MONGODB_URI": private_db.url + "e2e"},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=support.PROJECT_DIR)
    support.started.append(caller)
    assert caller.stdout.readline().strip() == "loaded"
    private_db.stop()
    out, err = caller.communicate("go\n", timeout=60)
    assert caller.returncode == 1
    assert err.startswith("DatabaseUnavailable: MongoDB at MONGODB_URI=mongodb://127.0.0.1:"), err
    private_db.start()
    db.connect(private_db.url + "e2e")
    assert E2EJob._get_collection().find_one({"_id": doc.pk}) == before
    # the same message, password hidden, from a process configured with credentials
    private_db.stop()
    result = subprocess.run([venv_bin("procctl"), "monitor", "--once"], env=d.env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "mongodb://app:***@127.0.0.1:" in result.stderr and "s3cret" not in result.stderr


# -- the startup checks of every separate process ------------------------------------------------


@pytest.mark.parametrize("command", [
    ["celery", "-A", "celery_app", "worker", "-l", "INFO"],
    ["procctl", "worker"],
    ["procctl", "serve", "--port", "0"],
    ["procctl", "monitor", "--once"],
])
def test_every_separate_process_refuses_an_unreachable_database_naming_it(command):
    port = free_port()
    env = {**os.environ, "MONGODB_URI": f"mongodb://ops:hunter2@127.0.0.1:{port}/prod",
           "PROC_MODELS": "e2e_models", "PYTHONPATH": MODELS_DIR, "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_HEARTBEAT_INTERVAL": "0.3"}
    result = subprocess.run([venv_bin(command[0]), *command[1:]], env=env, capture_output=True, text=True,
                            timeout=60, cwd=support.PROJECT_DIR)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert f"MONGODB_URI=mongodb://ops:***@127.0.0.1:{port}/prod did not answer" in line
    assert "check MONGODB_URI" in line and "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["celery", "-A", "celery_app", "worker"], ["procctl", "serve"],
                                     ["procctl", "monitor"]])
def test_every_separate_process_refuses_an_outage_timeout_above_a_heartbeat_timeout(command, database_uri):
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models", "PYTHONPATH": MODELS_DIR,
           "PROC_DB_OUTAGE_TIMEOUT": "10"}
    result = subprocess.run([venv_bin(command[0]), *command[1:]], env=env, capture_output=True, text=True,
                            timeout=60, cwd=support.PROJECT_DIR)
    assert result.returncode == 2
    assert ("PROC_DB_OUTAGE_TIMEOUT=10 s is not below the heartbeat_timeout of e2e_job.run (4 s)"
            in result.stderr)


def test_workers_and_servers_refuse_documents_in_the_old_shape_naming_the_datafix(database, database_uri):
    database["e2e_job"].insert_one({"_id": ObjectId(), "tasks": ["run"], "current_task": "run",
                                    "tasks_status": "SUCCESS"})
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models", "PYTHONPATH": MODELS_DIR,
           "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_HEARTBEAT_INTERVAL": "0.3"}
    for command in (["celery", "-A", "celery_app", "worker"], ["procctl", "serve"], ["procctl", "monitor"]):
        result = subprocess.run([venv_bin(command[0]), *command[1:]], env=env, capture_output=True,
                                text=True, timeout=60, cwd=support.PROJECT_DIR)
        assert result.returncode == 2, command
        assert "procctl datafix upgrade" in result.stderr and "e2e_job" in result.stderr, command
    status = subprocess.run([venv_bin("procctl"), "datafix", "status"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=support.PROJECT_DIR)
    assert "e2e_job" in status.stdout and "0001" in status.stdout, status.stdout + status.stderr


def test_the_datafix_commands_run_as_the_readme_gives_them(database, database_uri):
    coll = database["e2e_job"]
    doc_id = ObjectId()
    coll.insert_one({"_id": doc_id, "tasks": ["run"], "current_task": "run", "tasks_status": "SUCCESS"})
    env = {**os.environ, "MONGODB_URI": database_uri, "PROC_MODELS": "e2e_models", "PYTHONPATH": MODELS_DIR}

    def datafix(*args):
        return subprocess.run([venv_bin("procctl"), "datafix", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=support.PROJECT_DIR)

    dry = datafix("upgrade", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert coll.find_one({"_id": doc_id})["tasks_status"] == "SUCCESS"  # a dry run writes nothing
    assert datafix("verify").returncode == 1  # still in the old shape
    done = datafix("upgrade", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    migrated = coll.find_one({"_id": doc_id})
    assert migrated["process_status"] == "SUCCESS" and "tasks_status" not in migrated
    assert datafix("verify").returncode == 0
    back = datafix("downgrade", "--yes", "--to", "base")  # 0001 and the later ones (0003: the buckets)
    assert back.returncode == 0, back.stdout + back.stderr
    assert coll.find_one({"_id": doc_id})["tasks_status"] == "SUCCESS"


# -- forced stop --------------------------------------------------------------------------------


def test_cancel_terminate_kills_a_method_that_never_reports_after_the_grace(deploy):
    from proc.run.pools import process_gone

    d = deploy(PROC_CANCEL_GRACE="1")
    d.worker("w1", 2)
    [doc] = jobs(1, cls=E2ESilent)
    d.call([doc])
    wait_for(lambda: em.runs_of(doc), timeout=30, message="the silent body to start")
    pid = em.runs_of(doc)[0]["pid"]
    doc.reload()
    assert (doc.process_status, doc.worker_pool, doc.worker_pid) == ("RUNNING", "prefork", pid)

    result = subprocess.run([venv_bin("procctl"), "admin", "cancel", "--terminate", "e2e_silent", str(doc.pk)],
                            env=d.env, capture_output=True, text=True, timeout=60, cwd=support.PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    assert "FAILURE (attempt 1)" in result.stdout
    assert "scheduled: its pool process on w1@" in result.stdout and "terminated in 1 s" in result.stdout

    wait_for(lambda: reload(doc).history[-1]["event"] == "stopped", timeout=30,
             message=f"the stopped entry (worker log {d.log('w1')})")
    assert process_gone(pid)
    events = [h["event"] for h in doc.history[-4:]]
    assert events == ["fail", "terminate_requested", "terminate_sent", "stopped"]
    requested, sent = doc.history[-3]["time"], doc.history[-2]["time"]
    assert (sent - requested).total_seconds() >= 0.9  # after the grace, not at the request
    assert doc.history[-1]["note"] == f"the code was terminated (SIGTERM to pool process {pid})"
    assert doc.process_status == "FAILURE" and doc.errors == [f"cancelled by {doc.history[-4]['by']}"]
    assert [h["event"] for h in doc.history].count("fail") == 1  # proc's own revoke is not a second cancel
    records = em.runs_of(doc)
    assert len(records) == 1 and not any(r.get("ended") for r in records)  # one run, cut short

    # the worker lives on, with a new pool process
    [other] = jobs(1, hold=0.1)
    d.call([other])
    wait_for(lambda: status_of(other) == ("SUCCESS", 1), timeout=30, message="the next process")


# -- what Celery's own tools see and do -----------------------------------------------------------


def test_celery_events_count_a_failure_process_as_a_failed_task_and_a_success_as_succeeded(deploy):
    d = deploy()
    d.worker("w1", 2, "-E")  # task events on, as Flower and celery-exporter need them
    d._start("events", [venv_bin("celery"), "-A", "celery_app", "events", "--dump"])
    wait_for(lambda: "] heartbeat: " in d.output("events"), timeout=60, message="celery events to see the worker")
    failing = jobs(1, hold=0.1, fail_with="the upstream file is empty")[0]
    [fine] = jobs(1, hold=0.1)
    d.call([failing, fine])
    for doc, wanted in ((failing, "FAILURE"), (fine, "SUCCESS")):
        wait_for(lambda doc=doc, wanted=wanted: status_of(doc) == (wanted, 1), timeout=30, message=wanted)
    failed_id, fine_id = failing.reload().celery_task_id, fine.reload().celery_task_id

    def events_of(task_id: str, kind: str) -> list[str]:
        """The lines of `celery events --dump` for one task (received, started, failed, ...)."""
        return [ln for ln in d.output("events").splitlines() if f"] task {kind}: " in ln and task_id in ln]

    [line] = wait_for(lambda: events_of(failed_id, "failed"), timeout=30, interval=0.1,
                      message=f"a task-failed event for {failed_id}")
    assert "ProcessEndedFailure" in line and "the upstream file is empty" in line, line
    wait_for(lambda: events_of(fine_id, "succeeded"), timeout=30, interval=0.1,
             message=f"a task-succeeded event for {fine_id}")
    assert events_of(fine_id, "failed") == [] and events_of(failed_id, "succeeded") == []
    assert events_of(failed_id, "retried") == []  # Celery retries nothing
    assert len(em.runs_of(failing)) == 1 and failing.errors == ["the upstream file is empty"]
    worker_log = d.output("w1")
    assert "raised expected: ProcessEndedFailure" in worker_log and "Traceback" not in worker_log


def test_celery_control_terminate_and_revoke_are_recorded_as_cancels_through_celery(deploy):
    """`celery control terminate SIGTERM <id>` (Flower's Terminate) on a running process and
    `celery control revoke <id>` (Flower's Revoke) on a queued one."""
    from proc.run.pools import process_gone

    d = deploy()
    d.worker("w1", 1)  # one pool process: the second process waits in the queue
    [running] = jobs(1, cls=E2ESilent)
    [queued] = jobs(1, cls=E2ESilent, hold=0.1)
    d.call([running])
    wait_for(lambda: em.runs_of(running), timeout=30, message="the silent body to start")
    d.call([queued])
    assert status_of(queued) == ("DISPATCHED", 1)
    pid = em.runs_of(running)[0]["pid"]

    def control(*args):
        result = subprocess.run([venv_bin("celery"), "-A", "celery_app", "control", *args], env=d.env,
                                capture_output=True, text=True, timeout=60, cwd=support.PROJECT_DIR)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "revoked" in control("revoke", queued.reload().celery_task_id)
    sent = time.monotonic()
    assert "terminate" in control("terminate", "SIGTERM", running.reload().celery_task_id).lower()
    wait_for(lambda: reload(running).history[-1]["event"] == "stopped", timeout=15, interval=0.05,
             message=f"the cancel and the stop (worker log {d.log('w1')})")
    stopped_in = time.monotonic() - sent
    assert process_gone(pid)
    [cancel, stop] = running.history[-2:]
    assert (cancel["event"], cancel["by"], cancel["note"]) == ("fail", "celery (revoked through Celery)",
                                                               "cancelled by celery (revoked through Celery)")
    assert stop["note"] == f"the code was terminated (SIGTERM to pool process {pid})"
    assert running.process_status == "FAILURE" and running.errors == ["cancelled by celery (revoked through Celery)"]
    records = em.runs_of(running)
    assert len(records) == 1 and not any(r.get("ended") for r in records)  # cut short, once

    # the freed pool process takes the revoked message, and discards it: recorded as a cancel
    wait_for(lambda: status_of(queued)[0] == "FAILURE", timeout=30, message="the queued one cancelled")
    assert queued.reload().history[-1]["by"] == "celery (revoked through Celery)"
    assert [h["event"] for h in queued.history].count("fail") == 1 and em.runs_of(queued) == []
    print(f"\nterminate through Celery: cancel and stop recorded {stopped_in:.2f} s after the command")
