"""Across hosts: partitions cut for real between hosts in network namespaces.

Host ``db`` runs SecantusDB, ``broker`` Redis, ``w1`` and ``w2`` a prefork worker each
(``celery -A celery_app worker``), ``ops`` ``procctl monitor`` and ``procctl serve``; callers
run on ``ops`` too. Each process listens on its own host's address. The links are cut and
healed for real (``tests/hosts_net.py``): a host's link set down on the bridge, or the frames
between two hosts sent to a MAC address nobody has. Each body records its life in a file all
hosts share (``tests/models/hosts_models.py``), so every row counts the runs of each copy and
checks that no two copies ran at once, besides each process's history.

Needs root (network namespaces); without it every test skips with the reason, and with
CI=true that skip is a failure. Thresholds are short: heartbeat interval 0.3 s, timeout 4 s,
PROC_DB_OUTAGE_TIMEOUT (the lease) 2 s, a sweep every 0.5 s.
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

import hosts_net
import support
from proc import config, registry
from proc.store import db
from support import spawn, venv_bin, wait_for

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(300)]

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_DIR = os.path.join(TESTS_DIR, "hosts_clock")
TOKEN = "t0ken-for-the-hosts-tests-0123456789abcdef"
HOSTS = ("db", "broker", "w1", "w2", "ops")
HEARTBEAT_TIMEOUT = 4.0
DB_PORT, BROKER_PORT, WEB_PORT = 27017, 6379, 8000


class Deployment:
    """The hosts of one test and the processes on them."""

    def __init__(self, net: hosts_net.Hosts, tmp_path):
        self.net = net
        self.tmp = tmp_path
        self.runs_file = str(tmp_path / "runs.jsonl")
        self.processes: dict[str, subprocess.Popen] = {}
        self.db_url = f"mongodb://{net.address['db']}:{DB_PORT}/hosts"
        self.broker_url = f"redis://{net.address['broker']}:{BROKER_PORT}/0"
        self.web = f"http://{net.address['ops']}:{WEB_PORT}"

    def env(self, host: str, **extra) -> dict:
        env = dict(os.environ)
        env.update({
            "MONGODB_URI": self.db_url, "CELERY_BROKER_URL": self.broker_url,
            "PROC_MODELS": "hosts_models", "PYTHONPATH": support.MODELS_DIR,
            "PROC_HEARTBEAT_INTERVAL": "0.3", "PROC_DB_OUTAGE_TIMEOUT": "2", "PROC_DISPATCH_TIMEOUT": "2",
            "PROC_DB_SOCKET_TIMEOUT": "3",
            "PROC_API_TOKEN": TOKEN, "PROC_TEST_HOST": host, "PROC_TEST_RUNS_FILE": self.runs_file,
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def log(self, name: str) -> str:
        return str(self.tmp / f"{name}.log")

    def output(self, name: str) -> str:
        return support.read_log(self.log(name))

    def start(self, name: str, host: str, argv: list[str], ready: str | None = None, **env):
        proc = spawn(self.net.run(host, argv), env=self.env(host, **env), log=self.log(name))
        self.processes[name] = proc
        if ready:
            wait_for(lambda: support.said(name, proc, self.log(name), ready), timeout=60, interval=0.05,
                     message=f"{name} to say {ready!r} ({self.log(name)})")
        return proc

    def servers(self) -> None:
        data = str(self.tmp / "db")
        self.start("db", "db", [venv_bin("secantusd-py"), "--host", self.net.address["db"], "--port",
                                str(DB_PORT), "--storage-path", data, "--log-level", "WARNING"])
        wait_for(lambda: support.server_answers(self.db_url, 0.5), timeout=30, interval=0.1,
                 message=f"secantusd-py on host db ({self.log('db')})")
        redis = shutil.which("redis-server")
        if not redis:
            support.require("redis-server is not installed (run scripts/install-system-deps)")
        self.start("broker", "broker", [redis, "--port", str(BROKER_PORT), "--bind", self.net.address["broker"],
                                        "--save", "", "--appendonly", "no", "--dir", str(self.tmp),
                                        "--protected-mode", "no"])
        wait_for(self.broker_answers, timeout=15, interval=0.05, message=f"redis-server on host broker")
        db.connect(self.db_url)

    def broker_answers(self) -> bool:
        import socket
        try:
            with socket.create_connection((self.net.address["broker"], BROKER_PORT), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def worker(self, host: str, concurrency: int = 1, name: str | None = None, **env) -> subprocess.Popen:
        return self.start(name or host, host, [venv_bin("celery"), "-A", "celery_app", "worker", "-l", "INFO",
                                               "-c", str(concurrency), "-n", f"{host}@{host}"],
                          ready=" ready.", **env)

    def monitor(self) -> subprocess.Popen:
        return self.start("monitor", "ops", [venv_bin("procctl"), "monitor", "--interval", "0.5"],
                          ready="monitor: sweeping")

    def serve(self) -> None:
        self.start("web", "ops", [venv_bin("procctl"), "serve", "--host", self.net.address["ops"],
                                  "--port", str(WEB_PORT)])
        wait_for(lambda: self.get("/healthz")[0] in (200, 503), timeout=60, interval=0.1,
                 message=f"procctl serve on host ops ({self.log('web')})")

    def get(self, path: str, token: bool = True) -> tuple[int, str]:
        request = urllib.request.Request(self.web + path, headers={"X-Proc-Request": "1", **(
            {"Authorization": f"Bearer {TOKEN}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def call(self, docs, host: str = "ops", check: bool = True) -> subprocess.CompletedProcess:
        argv = self.net.run(host, [sys.executable, os.path.join(TESTS_DIR, "system", "e2e_caller.py"),
                                   docs[0]._get_collection_name(), *[str(d.pk) for d in docs]])
        result = subprocess.run(argv, env=self.env(host), capture_output=True, text=True, timeout=120,
                                cwd=support.PROJECT_DIR)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def runs(self, doc) -> list[tuple]:
        import hosts_models
        return hosts_models.runs(self.runs_file).get(str(doc.pk), [])

    def stop_all(self) -> None:
        """Every process and its group killed at once: the hosts go with them, nothing to keep."""
        for proc in reversed(list(self.processes.values())):
            support.kill_group(proc)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def hosts(tmp_path):
    reason = hosts_net.available()
    if reason:
        support.require(f"the partition tests need network namespaces: {reason}")
    net = hosts_net.Hosts(HOSTS).open()
    d = Deployment(net, tmp_path)
    registry.load_models(["hosts_models"])
    try:
        d.servers()
        yield d
    finally:
        try:
            net.heal()
            d.stop_all()
        finally:
            net.heal()
            net.close()
    assert hosts_net.leftovers(net.prefix) == []


def status_of(doc) -> tuple[str, int]:
    doc.reload_status()
    return doc.process_status, doc.attempt


def successes(doc) -> int:
    return sum(1 for h in doc.history if h["status"] == "SUCCESS")


def jobs(cls, n: int = 1, **fields) -> list:
    docs = [cls(**fields) for _ in range(n)]
    for doc in docs:
        doc.save()
    return docs


def assert_never_two_at_once(copies) -> None:
    """Each copy's run (start to last line) ends before the next one starts."""
    for earlier, later in zip(copies, copies[1:]):
        assert earlier[4] < later[3], f"two copies ran at once: {earlier} and {later}"


def running_on(d: Deployment, doc, host: str) -> None:
    wait_for(lambda: any(c[1] == host and c[5] == "alive" for c in d.runs(doc)), timeout=30,
             message=f"the body to run on {host}")


# -- 1, 2: a worker cut off mid-run ------------------------------------------------------------


@pytest.mark.parametrize("fault, model", [("from every host", "HostJob"), ("from db only", "HostSilent")])
def test_a_worker_cut_off_mid_run_stops_its_code_and_another_host_finishes_it(hosts, fault, model):
    """``w1`` loses its lease and stops its code (a body that reports: ``set_step`` raises; one
    that never reports: its pool process stops itself); the monitor sends it again after the
    heartbeat timeout, ``w2`` runs the next attempt to SUCCESS; the copies never overlap; after healing
    nothing ``w1`` writes lands."""
    import hosts_models

    d = hosts
    cls = getattr(hosts_models, model)
    d.worker("w1")
    d.monitor()
    [doc] = jobs(cls, hold=12.0, later_hold=1.0)
    d.call([doc])
    running_on(d, doc, "w1")
    d.worker("w2")  # started now, so w1 took attempt 1
    cut_at = time.monotonic()
    if fault == "from every host":
        d.net.cut("w1")
    else:
        d.net.cut("w1", "db")
    wait_for(lambda: d.runs(doc)[0][5] != "alive" or time.monotonic() - d.runs(doc)[0][4] > 0.5,
             timeout=15, message="w1's copy to stop")
    w1 = d.runs(doc)[0]
    stopped_after = w1[4] - cut_at
    # Cut off from db only, w1 may take the next attempt's message and fail to claim it: the
    # monitor sends it again after the queue timeout, so w2 may end it at attempt 3.
    wait_for(lambda: status_of(doc)[0] == "SUCCESS", timeout=40, message="a later attempt to SUCCESS on w2")
    d.net.heal()
    if model == "HostJob":
        assert w1[5] == "stopped"  # set_step raised ProcessCancelled("lease lost: ...")
        wait_for(lambda: "lease lost: heartbeat not accepted for" in d.output("w1"), timeout=10,
                 message="w1 to log the lost lease")
    else:
        wait_for(lambda: "stops itself" in d.output("w1"), timeout=10, message="w1's pool process to stop itself")
    doc.reload()
    copies = d.runs(doc)
    assert [(c[0], c[1]) for c in copies] == [(1, "w1"), (doc.attempt, "w2")] and doc.attempt >= 2, copies
    assert copies[1][5] == "end"
    assert_never_two_at_once(copies)
    assert successes(doc) == 1
    # lease (2 s) + one interval + the stop, well before the heartbeat timeout (4 s)
    assert stopped_after < HEARTBEAT_TIMEOUT, stopped_after
    # after healing, w1 writes nothing that lands: every entry after the claim of attempt 2 is w2's or the monitor's
    second = next(i for i, h in enumerate(doc.history) if h.get("attempt") == doc.attempt)
    assert all("w1" not in (h.get("host") or "") for h in doc.history[second:]), doc.history
    print(f"\n{fault}: w1's code stopped {stopped_after:.1f} s after the cut; "
          f"attempt {doc.attempt} started {copies[1][3] - cut_at:.1f} s after the cut; gap {copies[1][3] - w1[4]:.1f} s")


def test_a_worker_cut_off_from_db_hands_a_message_it_cannot_claim_back_and_stops_taking_more(hosts):
    """``w1``, cut off from ``db`` only, takes a message and cannot write its claim: it stops
    consuming, then publishes the message again (nothing ran) instead of losing it, and ``w2``
    runs the process at the same attempt; ``w1`` takes none of the later messages while the
    cut lasts and consumes again once healed. No monitor runs: without the hand-back the
    process would wait DISPATCHED for its queue timeout."""
    import hosts_models

    d = hosts
    d.worker("w1")
    [doc] = jobs(hosts_models.HostJob, hold=0.5)
    d.net.cut("w1", "db")
    d.call([doc])
    wait_for(lambda: "proc.run[" in d.output("w1") and "received" in d.output("w1"), timeout=15,
             message="w1 to receive the message")
    d.worker("w2")
    w2_ready = time.monotonic()
    wait_for(lambda: status_of(doc) == ("SUCCESS", 1), timeout=40, message="SUCCESS at attempt 1 on w2")
    took = time.monotonic() - w2_ready
    w1 = d.output("w1")
    assert "w1@w1 stops taking messages: the database does not answer it" in w1, w1[-3000:]
    assert w1.count("handed the message of") == 1 and "retry: the message goes back to the broker" in w1
    later = jobs(hosts_models.HostJob, 3, hold=0.2)
    d.call(later)
    wait_for(lambda: all(status_of(job) == ("SUCCESS", 1) for job in later), timeout=30,
             message="the later processes to run on w2")
    assert all([c[1] for c in d.runs(job)] == ["w2"] for job in later)
    received = [line for line in d.output("w1").splitlines() if "Task proc.run[" in line and line.endswith("received")]
    assert len(received) == 1, received  # paused: none of the later messages came to w1
    d.net.heal()
    wait_for(lambda: "w1@w1 takes messages again: the database answers" in d.output("w1"), timeout=20,
             message="w1 to consume again once healed")
    doc.reload()
    assert [(c[0], c[1], c[5]) for c in d.runs(doc)] == [(1, "w2", "end")]
    assert successes(doc) == 1 and doc.worker_hostname == "w2@w2"
    print(f"\nrun on w2 {took:.1f} s after w2 was ready; w1 handed it back once")


# -- 3: a worker cut off from the broker ----------------------------------------------------------


def test_a_worker_cut_off_from_the_broker_finishes_its_run_and_nothing_runs_twice(hosts):
    """``w1`` keeps its database (heartbeats live) while its broker link is cut for longer than
    Redis's visibility timeout: its run goes on (``proc.run`` was acknowledged when the pool
    process took it, so the broker holds nothing of it to deliver again, and a copy that came
    again would find nothing to claim); the body runs once, SUCCESS at attempt 1."""
    import hosts_models

    d = hosts
    d.worker("w1", PROC_VISIBILITY_TIMEOUT=2)
    d.monitor()
    [doc] = jobs(hosts_models.HostJob, hold=9.0)
    d.call([doc])
    running_on(d, doc, "w1")
    d.worker("w2", PROC_VISIBILITY_TIMEOUT=2)
    d.net.cut("w1", "broker")
    # a second copy of the running attempt's message, as a redelivery across the cut would
    # bring it: w2 takes it while w1's copy runs with a live heartbeat, and its claim refuses.
    # The first copy may go to w1's BRPOP that was waiting when the link was cut: Redis pops it
    # and the reply is lost with the link (so a message can be lost that way; the monitor's
    # queue timeout covers it); then w1 asks for no more and the next copy reaches w2.
    for _ in range(3):
        second_copy(d, doc)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and "ignored message for" not in d.output("w2"):
            time.sleep(0.05)
        if "ignored message for" in d.output("w2"):
            break
    assert "ignored message for" in d.output("w2"), d.output("w2")[-2000:]
    assert status_of(doc) == ("RUNNING", 1) and len(d.runs(doc)) == 1
    wait_for(lambda: status_of(doc)[0] == "SUCCESS", timeout=40, message="SUCCESS while w1 is cut off from the broker")
    d.net.heal()
    doc.reload()
    copies = d.runs(doc)
    assert [(c[0], c[1], c[5]) for c in copies] == [(1, "w1", "end")], copies
    assert doc.attempt == 1 and successes(doc) == 1


def second_copy(d, doc) -> None:
    """Publish attempt ``doc.attempt``'s ``proc.run`` message once more, from this process."""
    from proc import config
    from proc.run import messaging

    app = messaging.make_app(config.Settings(**{**config.get().__dict__, "broker_url": d.broker_url}))
    try:
        messaging.set_app(app)
        raw = doc._get_collection().find_one({"_id": doc.pk})
        messaging.publish(registry.kind_of(type(doc), raw), raw)
    finally:
        messaging.set_app(None)
        app.close()


# -- 6: a worker host whose clock is 5 minutes off ------------------------------------------------


def test_a_worker_five_minutes_behind_or_ahead_is_neither_taken_for_dead_nor_kept_alive(hosts):
    """Each host writes heartbeats on the server's clock: a worker 5 minutes behind, then one 5
    minutes ahead, each runs a job longer than the heartbeat timeout with no "heartbeat lost";
    each one's real death (SIGKILL) is found within the heartbeat timeout and a sweep."""
    import hosts_models

    d = hosts
    d.monitor()
    found = []
    [dying] = jobs(hosts_models.HostJob, hold=60.0)  # run by each worker in turn, until it is killed
    for number, (shift, name) in enumerate(((-300, "w1-behind"), (300, "w1-ahead")), start=1):
        d.worker("w1", 2, name=name, PYTHONPATH=os.pathsep.join([CLOCK_DIR, support.MODELS_DIR]),
                 PROC_TEST_CLOCK_SHIFT=shift)
        [long] = jobs(hosts_models.HostJob, hold=HEARTBEAT_TIMEOUT * 2)
        d.call([long] if number > 1 else [long, dying])  # the second worker takes dying's attempt 2
        wait_for(lambda: status_of(long)[0] == "SUCCESS", timeout=40, message=f"SUCCESS on {name}")
        long.reload()
        assert long.attempt == 1 and len(d.runs(long)) == 1, long.history
        assert not any("heartbeat lost" in (h.get("note") or "") for h in long.history), long.history
        said = [line for line in d.output(name).splitlines() if "this host's clock is" in line]
        assert said and abs(float(said[0].split("this host's clock is ")[1].split()[0]) - shift) < 1, said

        # (while no worker ran, the monitor may have sent it again once more: a queue timeout)
        wait_for(lambda: status_of(dying)[0] == "RUNNING" and dying.worker_hostname == "w1@w1" and any(
            c[0] == dying.attempt and c[5] == "alive" for c in d.runs(dying)), timeout=30,
            message=f"dying running on {name}")
        lost = sum("heartbeat lost" in (h.get("note") or "") for h in dying.reload().history)
        assert lost == number - 1, dying.history  # only the earlier worker's real death
        attempt = dying.attempt
        os.killpg(d.processes[name].pid, signal.SIGKILL)  # the worker and its pool
        killed = time.monotonic()
        wait_for(lambda: status_of(dying)[1] == attempt + 1, timeout=HEARTBEAT_TIMEOUT + 10,
                 message=f"the death of {name} to be found")
        found.append(time.monotonic() - killed)
        assert sum("heartbeat lost" in (h.get("note") or "") for h in dying.reload().history) == number
        d.processes[name].wait(10)
    assert all(seconds < HEARTBEAT_TIMEOUT + 3 for seconds in found), found
    print(f"\ndeath found after {found[0]:.1f} s (5 min behind), {found[1]:.1f} s (5 min ahead)")


# -- 4: the web and monitor host cut off from the database ----------------------------------------


def test_the_page_says_the_database_is_unreachable_and_recovers_when_healed(hosts):
    d = hosts
    d.serve()
    assert d.get("/healthz", token=False) == (200, d.get("/healthz", token=False)[1])
    d.net.cut("ops", "db")
    cut_at = time.monotonic()
    status, body = d.get("/healthz", token=False)
    assert status == 503 and json.loads(body) == {"status": "unavailable", "database": {"ok": False},
                                                 "broker": {"ok": True}}
    took = {"/healthz": time.monotonic() - cut_at}
    for path in ("/projects/admin/check-status/", "/api/status"):
        asked = time.monotonic()
        status, body = d.get(path)
        took[path] = time.monotonic() - asked
        assert status == 503 and "The database is unreachable: MongoDB at MONGODB_URI=" in body, body[:2000]
    assert json.loads(body)["error"].startswith("The database is unreachable")
    d.net.heal()
    healed = time.monotonic()
    wait_for(lambda: d.get("/healthz", token=False)[0] == 200, timeout=30, interval=0.2,
             message="/healthz to answer 200 after healing")
    wait_for(lambda: d.get("/projects/admin/check-status/")[0] == 200, timeout=30, interval=0.2,
             message="the page to recover after healing")
    print(f"\n503 after {', '.join(f'{path} {t:.1f} s' for path, t in took.items())}; "
          f"page back {time.monotonic() - healed:.1f} s after healing")


# -- 5: callers cut off from the broker ----------------------------------------------------------


def test_a_call_cut_off_from_the_broker_stays_pending_and_the_monitor_sends_it_after_healing(hosts):
    import hosts_models

    d = hosts
    d.worker("w1")
    d.monitor()
    [doc] = jobs(hosts_models.HostJob, hold=0.5)
    d.net.cut("ops", "broker")
    result = d.call([doc], check=False)
    assert result.returncode == 1 and "\nBrokerUnavailable: broker unreachable at redis://" in "\n" + result.stderr, \
        result.stderr
    doc.reload()
    assert doc.process_status == "PENDING" and "broker unreachable at redis://" in doc.current_process_step
    wait_for(lambda: "broker still unreachable" in d.output("monitor"), timeout=20,
             message="the monitor to say the broker is still unreachable")
    assert status_of(doc) == ("PENDING", 1) and d.runs(doc) == []
    d.net.heal()
    healed = time.monotonic()
    wait_for(lambda: status_of(doc)[0] != "PENDING", timeout=30, message="the monitor to send it after healing")
    sent_after = time.monotonic() - healed
    wait_for(lambda: status_of(doc) == ("SUCCESS", 1), timeout=30, message="SUCCESS at attempt 1")
    doc.reload()
    assert [(c[0], c[1], c[5]) for c in d.runs(doc)] == [(1, "w1", "end")]
    assert successes(doc) == 1
    print(f"\nsent {sent_after:.1f} s after healing")


# -- 7: a frozen worker --------------------------------------------------------------------------


def test_a_frozen_worker_is_named_with_its_running_processes_and_fences_itself_when_it_thaws(hosts):
    """SIGSTOP freezes ``w1`` (main process and pool): the page and /api/status name it with its
    RUNNING processes. Thawed past its lease, it stops its code before it writes anything (a
    paused lease holder must not go on)."""
    import hosts_models

    d = hosts
    d.serve()
    d.worker("w1", 2)
    docs = jobs(hosts_models.HostJob, 2, hold=60.0)
    d.call(docs)
    for doc in docs:
        running_on(d, doc, "w1")
    wait_for(lambda: any(h["name"] == "w1@w1" and h["answering"] and h["busy"] == 2
                         for h in json.loads(d.get("/api/status?workers=false")[1])["hosts"]),
             timeout=15, message="w1 shown answering with 2 RUNNING")
    os.killpg(d.processes["w1"].pid, signal.SIGSTOP)
    frozen = time.monotonic()

    def named():
        hosts_ = json.loads(d.get("/api/status?workers=false")[1])["hosts"]
        return next((h for h in hosts_ if h["name"] == "w1@w1" and not h["answering"]), None)

    w1 = wait_for(named, timeout=30, interval=0.2, message="w1 named as not answering")
    named_after = time.monotonic() - frozen
    assert w1["said"].startswith("w1@w1 has not answered for ") and \
        "its 2 RUNNING processes' heartbeats are " in w1["said"], w1
    assert {p["id"] for p in w1["running"]} == {str(doc.pk) for doc in docs}
    status, page = d.get("/projects/admin/check-status/")
    assert status == 200 and "w1@w1 has not answered for " in page and str(docs[0].pk) in page
    os.killpg(d.processes["w1"].pid, signal.SIGCONT)
    for doc in docs:
        wait_for(lambda doc=doc: d.runs(doc)[-1][5] == "stopped", timeout=15,
                 message="the thawed body to stop (lease lost)")
        doc.reload()
        assert doc.process_status == "RUNNING" and doc.attempt == 1  # left for the monitor to send again
    print(f"\nw1 named as not answering {named_after:.1f} s after SIGSTOP")
