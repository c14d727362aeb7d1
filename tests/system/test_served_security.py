"""The served app's rules on served processes, started as the docs start them (``gunicorn
api.wsgi:app``, ``flask --app api run``, ``procctl serve``), on a real MongoDB server.

A client on another machine is this machine's own non-loopback address (the client socket
is bound to it, so the server sees it as the peer). Each test asserts what the user sees:
status codes and bodies over real sockets, and the one line a refused start prints.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from api_seed import seed
from proc.demo.models import Precheck
from proc.status import ProcessStatus as S
from support import free_port, require, spawn, stop, venv_bin, wait_for

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(180)]

TOKEN = "served-token-0123456789abcdefghijklmnop"
SCRAPE_TOKEN = "scrape-token-0123456789abcdefghijklmnop"
PAGE = {"X-Proc-Request": "1"}


def outside_address() -> str:
    """This machine's own non-loopback IPv4 address (a client "from another machine")."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                             text=True, timeout=10).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        try:
            with socket.socket() as s:
                s.bind((address, 0))
            return address
        except OSError:
            continue
    require("this machine has no non-loopback IPv4 address to act as another machine")


@pytest.fixture
def served(tmp_path, database_uri, redis_url):
    """``served(argv, **env)`` starts a server process and returns it once it listens (or has
    exited: a refused start); every one is stopped afterwards."""
    started = []

    def start(argv, port, *, expect_exit=False, **env):
        environment = {**os.environ, "MONGODB_URI": database_uri, "CELERY_BROKER_URL": redis_url,
                       "PROC_MODELS": "proc.demo.models", "PYTHONUNBUFFERED": "1"}
        for name in ("PROC_API_TOKEN", "FLASK_PROC_API_TOKEN", "PROC_METRICS_TOKEN", "PROC_ALLOWED_HOSTS"):
            environment.pop(name, None)
        environment.update({k: str(v) for k, v in env.items()})
        log = str(tmp_path / f"server-{len(started)}.log")
        proc = spawn(argv, env=environment, log=log)
        proc.log = log
        started.append(proc)
        if expect_exit:
            proc.wait(timeout=60)
        else:
            wait_for(lambda: listening(port) or exited(proc), timeout=60, interval=0.1,
                     message=f"{argv[0]} to listen on {port}")
            assert proc.poll() is None, output(proc)
        return proc

    yield start
    for proc in started:
        stop(proc, timeout=20)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def exited(proc) -> bool:
    return proc.poll() is not None


def output(proc) -> str:
    with open(proc.log, encoding="utf-8", errors="replace") as f:
        return f.read()


def request(port: int, method: str, path: str, *, source: str | None = None, headers=None, body=None,
            host: str = "127.0.0.1", context=None):
    """``(status, body text)`` of one request to ``host:port``, sent from ``source``."""
    cls = http.client.HTTPSConnection if context else http.client.HTTPConnection
    extra = {"context": context} if context else {}
    conn = cls(host, port, timeout=30, source_address=(source, 0) if source else None, **extra)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def gunicorn(port: int, host: str = "0.0.0.0") -> list[str]:
    return [venv_bin("gunicorn"), "api.wsgi:app", "-b", f"{host}:{port}", "-w", "1", "--threads", "8"]


def flask_run(port: int) -> list[str]:
    return [venv_bin("flask"), "--app", "api", "run", "--host", "0.0.0.0", "--port", str(port)]


def procctl_serve(port: int, *extra: str) -> list[str]:
    return [venv_bin("procctl"), "serve", "--host", "0.0.0.0", "--port", str(port), "--workers", "1", *extra]


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- 1: no open admin API, whatever server runs the app --------------------------------------------

@pytest.mark.parametrize("command", [gunicorn, flask_run], ids=["gunicorn", "flask-run"])
def test_without_a_token_a_server_on_every_address_answers_this_machine_only(served, command):
    outside = outside_address()
    pk = seed(Precheck, S.RUNNING)
    port = free_port()
    served(command(port), port)
    for path in ("/api/status?workers=false", "/projects/admin/check-status/", "/healthz", "/metrics"):
        status, body = request(port, "GET", path, source=outside, host=outside)
        assert status == 403 and "PROC_API_TOKEN" in body, (path, status, body[:300])
    status, body = request(port, "POST", f"/api/procs/precheck/{pk}/cancel", source=outside, host=outside,
                           headers=PAGE)
    assert status == 403
    status, body = request(port, "POST", "/api/procs/bulk", source=outside, host=outside,
                           headers={**PAGE, "Content-Type": "application/json"},
                           body=json.dumps({"action": "cancel", "filter": {"status": ["RUNNING"]}}))
    assert status == 403
    status, body = request(port, "GET", "/api/status?workers=false", headers={"X-Forwarded-For": "198.51.100.9"})
    assert status == 403 and "came through a proxy" in body
    assert Precheck._get_collection().find_one({"_id": pk})["process_status"] == "RUNNING"
    assert request(port, "GET", "/api/status?workers=false")[0] == 200  # this machine is served


def test_with_a_token_procctl_serve_answers_another_machine_that_carries_it(served):
    outside = outside_address()
    port = free_port()
    proc = served(procctl_serve(port), port, PROC_API_TOKEN=TOKEN)
    assert request(port, "GET", "/api/status?workers=false", source=outside, host=outside)[0] == 401
    status, body = request(port, "GET", "/api/status?workers=false", source=outside, host=outside,
                           headers=bearer())
    assert status == 200 and json.loads(body)["counts"]
    assert "serving plain HTTP on 0.0.0.0" in output(proc)  # 6: says to add TLS


# -- 2, 12: one token, strong, refused at startup with one line -------------------------------------

REFUSALS = [
    ({"PROC_API_TOKEN": TOKEN, "FLASK_PROC_API_TOKEN": ""}, "FLASK_PROC_API_TOKEN is not read"),
    ({"PROC_API_TOKEN": TOKEN, "FLASK_PROC_API_TOKEN": "null"}, "FLASK_PROC_API_TOKEN is not read"),
    ({"PROC_API_TOKEN": TOKEN, "FLASK_PROC_PAGE_SIZE": "abc"}, "FLASK_PROC_PAGE_SIZE='abc' is not"),
    ({"PROC_API_TOKEN": "a"}, "PROC_API_TOKEN is too short"),
    ({"PROC_API_TOKEN": " " * 40}, "PROC_API_TOKEN has characters other than visible ASCII"),
    ({"PROC_API_TOKEN": ""}, "PROC_API_TOKEN is set but empty"),
    ({"PROC_API_TOKEN": "ü" * 40}, "PROC_API_TOKEN has characters other than visible ASCII"),
]


@pytest.mark.parametrize("env, message", REFUSALS, ids=[m[:30] + str(i) for i, (_, m) in enumerate(REFUSALS)])
def test_procctl_serve_refuses_a_token_it_cannot_trust_with_one_line_and_exit_2(served, env, message):
    port = free_port()
    proc = served(procctl_serve(port), port, expect_exit=True, **env)
    lines = output(proc).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert not listening(port)


@pytest.mark.parametrize("env, message", [REFUSALS[0], REFUSALS[3], REFUSALS[6]], ids=["flask-token", "short", "non-ascii"])
def test_gunicorn_api_wsgi_refuses_it_with_one_line_and_stops(served, env, message):
    port = free_port()
    proc = served(gunicorn(port, "127.0.0.1"), port, expect_exit=True, **env)
    text = output(proc)
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and message in errors[0], text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("env, message", [REFUSALS[1], REFUSALS[2], REFUSALS[4]], ids=["flask-token", "page-size", "blank"])
def test_flask_run_refuses_it_with_one_line_and_exit_2(served, env, message):
    port = free_port()
    proc = served(flask_run(port), port, expect_exit=True, **env)
    errors = [line for line in output(proc).splitlines() if line.startswith("Error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], output(proc)
    assert "Traceback" not in output(proc)


# -- 4: /metrics needs a token when one is set; anonymous scrapes are turned away cheaply -----------

def test_metrics_need_the_scrape_token_which_cannot_act_and_anonymous_scrapes_are_refused(served):
    port = free_port()
    served(gunicorn(port, "127.0.0.1"), port, PROC_API_TOKEN=TOKEN, PROC_METRICS_TOKEN=SCRAPE_TOKEN)
    pk = seed(Precheck, S.RUNNING)
    results = []

    def scrape():
        results.append(request(port, "GET", "/metrics")[0])

    threads = [threading.Thread(target=scrape) for _ in range(32)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [401] * 32, results
    assert time.monotonic() - began < 20
    status, body = request(port, "GET", "/metrics", headers=bearer(SCRAPE_TOKEN))
    assert status == 200 and "proc_processes" in body
    assert request(port, "POST", f"/api/procs/precheck/{pk}/cancel", headers=bearer(SCRAPE_TOKEN))[0] == 401
    assert request(port, "GET", "/api/status?workers=false", headers=bearer(SCRAPE_TOKEN))[0] == 401
    assert Precheck._get_collection().find_one({"_id": pk})["process_status"] == "RUNNING"


# -- 5: /healthz ----------------------------------------------------------------------------------

def test_healthz_tells_anonymous_clients_only_up_or_down_and_hides_secrets_from_the_token_holder(served):
    port = free_port()
    broker = "redis://:br0ker-p@ss/w0rd@127.0.0.1:9/0"  # an '@' and a '/' in the password; nothing listens
    served(gunicorn(port, "127.0.0.1"), port, PROC_API_TOKEN=TOKEN, CELERY_BROKER_URL=broker,
           FLASK_PROC_INSPECT_TIMEOUT="0.2")
    status, body = request(port, "GET", "/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "database": {"ok": True}, "broker": {"ok": False}}
    status, body = request(port, "GET", "/healthz", headers=bearer())
    details = json.loads(body)
    assert status == 503 and details["broker"]["url"] == "redis://***" and details["broker"]["error"]
    assert details["database"]["url"].startswith("mongodb://127.0.0.1:")
    for secret in ("br0ker", "p@ss", "w0rd"):
        assert secret not in body, secret


# -- 6: TLS ---------------------------------------------------------------------------------------

def test_procctl_serve_serves_https_with_certfile_and_keyfile(served, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                           "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                          capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        require(f"openssl could not make a test certificate: {made.stderr[-300:]}")
    port = free_port()
    proc = served(procctl_serve(port, "--certfile", cert, "--keyfile", key), port, PROC_API_TOKEN=TOKEN)
    context = ssl.create_default_context(cafile=cert)
    status, body = request(port, "GET", "/api/status?workers=false", headers=bearer(), context=context)
    assert status == 200 and "counts" in body
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        request(port, "GET", "/healthz")  # plain HTTP gets no answer
    assert f"https://0.0.0.0:{port}/" in output(proc) and "plain HTTP" not in output(proc)


def test_procctl_serve_wants_certfile_and_keyfile_together(served, tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    port = free_port()
    proc = served(procctl_serve(port, "--certfile", str(cert)), port, expect_exit=True, PROC_API_TOKEN=TOKEN)
    assert proc.returncode == 2 and "--certfile and --keyfile go together" in output(proc)


# -- 11: bounded bodies on a real gunicorn --------------------------------------------------------

def raw_exchange(port: int, head: bytes, body_part: bytes) -> bytes:
    """Send ``head`` and ``body_part`` only, then read what the server answers (until it
    closes or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_gunicorn_refuses_a_huge_body_with_413_without_reading_it(served):
    port = free_port()
    served(gunicorn(port, "127.0.0.1"), port)
    gib = 1024 ** 3
    head = (f"POST /api/procs/bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proc-Request: 1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {gib}\r\n\r\n").encode()
    began = time.monotonic()
    answer = raw_exchange(port, head, b"{" + b" " * 65536)  # 64 KiB of the announced 1 GiB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - began < 10  # answered without waiting for the rest


def chunked(payload: str) -> bytes:
    return b"".join(f"{len(part):x}\r\n".encode() + part.encode() + b"\r\n"
                    for part in (payload[i:i + 65536] for i in range(0, len(payload), 65536))) + b"0\r\n\r\n"


def test_gunicorn_cuts_a_chunked_body_at_one_mebibyte_and_serves_a_small_one(served):
    port = free_port()
    served(gunicorn(port, "127.0.0.1"), port)
    pk = seed(Precheck, S.RUNNING)
    head = (b"POST /api/procs/bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proc-Request: 1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    dry_run = {"action": "cancel", "filter": {"status": ["RUNNING"]}, "dry_run": True}
    assert raw_exchange(port, head, chunked(json.dumps(dry_run))).startswith(b"HTTP/1.1 200")
    too_big = json.dumps({"action": "cancel", "filter": {"status": ["RUNNING"]}, "pad": "x" * (2 * 1024 * 1024)})
    answer = raw_exchange(port, head, chunked(too_big))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert Precheck._get_collection().find_one({"_id": pk})["process_status"] == "RUNNING"
