"""The served app's own rules, checked on every request (``api.guard``, ``api.auth``,
``api.settings``, ``proc.redact``), through the Flask test client: a client on another
machine is ``REMOTE_ADDR``, a proxy is its headers. The same rules on served processes
(gunicorn, ``procctl serve``) are in test_served_security.py, in Chromium in
test_security_browser.py.
"""
from __future__ import annotations

import pytest

from api_seed import TOKEN, basic, bearer, seed
from proc import config
from proc.demo.models import Precheck
from proc.exceptions import ConfigurationError
from proc.redact import redact_text, redact_url
from proc.status import ProcessStatus as S
from support import make_flask_app

REMOTE = {"REMOTE_ADDR": "192.0.2.7"}
PAGE = {"X-Proc-Request": "1"}
METRICS_TOKEN = "metrics-only-0123456789abcdefghijklmn"


def status_of(pk) -> str:
    return Precheck._get_collection().find_one({"_id": pk})["process_status"]


# -- 1: without a token, only this machine -------------------------------------------------------

@pytest.mark.parametrize("url", ["/api/status", "/projects/admin/check-status/", "/healthz", "/metrics"])
def test_without_a_token_a_client_on_another_machine_is_refused_on_every_route(client, url):
    response = client.get(url, environ_base=REMOTE)
    assert response.status_code == 403
    assert "PROC_API_TOKEN" in response.get_data(as_text=True)
    assert client.get(url).status_code in (200, 503)  # the same request from this machine


def test_without_a_token_a_remote_post_changes_nothing(client):
    pk = seed(Precheck, S.RUNNING)
    response = client.post(f"/api/procs/precheck/{pk}/cancel", headers=PAGE, environ_base=REMOTE)
    assert response.status_code == 403 and "set PROC_API_TOKEN" in response.get_json()["error"]
    assert status_of(pk) == "RUNNING"
    bulk = client.post("/api/procs/bulk", json={"action": "cancel", "filter": {"status": ["RUNNING"]}},
                       headers=PAGE, environ_base=REMOTE)
    assert bulk.status_code == 403 and status_of(pk) == "RUNNING"


@pytest.mark.parametrize("header", [{"X-Forwarded-For": "198.51.100.4"},
                                    {"Forwarded": "for=198.51.100.4;proto=https"}])
def test_without_a_token_a_request_through_a_local_proxy_is_refused(client, header):
    pk = seed(Precheck, S.RUNNING)
    response = client.post(f"/api/procs/precheck/{pk}/cancel", headers={**PAGE, **header})
    assert response.status_code == 403
    assert "came through a proxy" in response.get_json()["error"]
    assert status_of(pk) == "RUNNING"


def test_with_a_token_other_machines_and_proxies_are_served_when_they_carry_it(secured):
    headers = {**bearer(), "X-Forwarded-For": "198.51.100.4"}
    assert secured.get("/api/status", headers=headers, environ_base=REMOTE).status_code == 200
    assert secured.get("/api/status", environ_base=REMOTE).status_code == 401


@pytest.mark.parametrize("address", ["::1", "::ffff:127.0.0.1", "127.0.0.2"])
def test_every_loopback_address_is_this_machine(client, address):
    assert client.get("/api/status", environ_base={"REMOTE_ADDR": address}).status_code == 200


# -- 2, 12, 18: one token, read from one place, strong enough ------------------------------------

@pytest.mark.parametrize("value", ["", "null", "false"])
def test_flask_proc_api_token_is_refused_rather_than_read(monkeypatch, value):
    monkeypatch.setenv("PROC_API_TOKEN", TOKEN)
    monkeypatch.setenv("FLASK_PROC_API_TOKEN", value)
    config.reset()
    with pytest.raises(ConfigurationError, match="FLASK_PROC_API_TOKEN is not read"):
        make_flask_app(TOKEN)


@pytest.mark.parametrize("value, problem", [
    ("", "empty"), (" ", "visible ASCII"), ("a", "too short"), ("x" * 31, "too short"),
    ("é" * 40, "visible ASCII"), ("has a space" * 4, "visible ASCII"),
])
def test_a_weak_or_non_ascii_token_is_refused_when_the_app_is_built(value, problem):
    with pytest.raises(ConfigurationError, match=problem):
        make_flask_app(value)
    with pytest.raises(ConfigurationError, match=f"PROC_METRICS_TOKEN .*{problem}"):
        make_flask_app(TOKEN, PROC_METRICS_TOKEN=value)


def test_an_empty_proc_api_token_in_the_environment_is_refused_not_taken_for_unset(monkeypatch):
    from api import create_app

    monkeypatch.setenv("PROC_API_TOKEN", "")
    config.reset()
    config.configure(mongodb_uri=config.EMBEDDED_MONGODB_URI)
    with pytest.raises(ConfigurationError, match="PROC_API_TOKEN is set but empty"):
        create_app()


@pytest.mark.parametrize("name, value", [("FLASK_PROC_PAGE_SIZE", "abc"), ("FLASK_PROC_PAGE_SIZE", "0"),
                                         ("FLASK_PROC_INSPECT_TIMEOUT", "-1"),
                                         ("FLASK_PROC_REFRESH_SECONDS", "true"),
                                         ("FLASK_PROC_BULK_LIMIT", "1.5"),
                                         ("FLASK_PROC_TIMINGS_SECONDS", "-1")])
def test_a_flask_proc_setting_that_is_not_a_number_is_refused_at_startup_not_at_request_time(
        monkeypatch, name, value):
    from api import create_app

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"{name}=.* is not"):
        create_app()


@pytest.mark.parametrize("command", [["demo", "--uploads", "1"], ["standalone", "--data-dir", "{tmp}"]])
def test_procctl_demo_and_standalone_refuse_a_short_token_before_starting_anything(tmp_path, command):
    import os
    import subprocess

    from support import venv_bin

    argv = [venv_bin("procctl")] + [part.format(tmp=tmp_path / "data") for part in command]
    env = {**os.environ, "PROC_API_TOKEN": "short"}
    env.pop("MONGODB_URI", None)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("Error: PROC_API_TOKEN is too short (5 characters")
    assert "status page" not in result.stdout and not (tmp_path / "data" / "logs").exists()


def test_a_32_character_token_works_alike_as_bearer_and_as_basic_password():
    token = "A" * 31 + "~"
    c = make_flask_app(token).test_client()
    assert c.get("/api/status", headers=bearer(token)).status_code == 200
    assert c.get("/api/status", headers=basic(password=token)).status_code == 200


# -- 3: DNS rebinding: the Host allow-list ---------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "[::1]:5000", "localhost:1"])
def test_without_a_token_the_loopback_names_are_allowed_with_any_port(client, host):
    assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_without_a_token_a_rebound_name_is_refused_and_cannot_act(client):
    pk = seed(Precheck, S.RUNNING)
    rebound = {"Host": "rebind.example:8000", "Origin": "http://rebind.example:8000",
               "Sec-Fetch-Site": "same-origin", **PAGE}
    assert client.get("/api/status", headers=rebound).status_code == 400
    response = client.post(f"/api/procs/precheck/{pk}/cancel", headers=rebound)
    assert response.status_code == 400 and "PROC_ALLOWED_HOSTS" in response.get_json()["error"]
    assert status_of(pk) == "RUNNING"
    page = client.get("/projects/admin/check-status/", headers=rebound)
    assert page.status_code == 400 and "DNS rebinding" in page.get_data(as_text=True)


def test_proc_allowed_hosts_replaces_the_default(monkeypatch):
    monkeypatch.setenv("PROC_ALLOWED_HOSTS", "proc.example.com, .internal.example")
    c = make_flask_app(TOKEN).test_client()
    for host, code in [("proc.example.com", 200), ("a.internal.example:8443", 200), ("localhost", 400),
                       ("evil.example", 400)]:
        assert c.get("/api/status", headers={"Host": host, **bearer()}).status_code == code, host


def test_with_a_token_any_host_is_allowed_by_default(secured):
    assert secured.get("/api/status", headers={"Host": "proc.example.com", **bearer()}).status_code == 200


# -- 17: redirects are relative --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/projects//admin/check-status/", "/projects/admin/check-status"])
def test_the_routers_redirect_does_not_reflect_host(secured, path):
    response = secured.get(path, headers={"Host": "evil.example", **bearer()})
    assert response.status_code == 308
    assert response.headers["Location"] == "/projects/admin/check-status/"


# -- 16: behind a reverse proxy ------------------------------------------------------------------

def test_behind_a_proxy_that_rewrites_host_the_page_origin_is_refused_unless_trusted(monkeypatch):
    pk = seed(Precheck, S.FAILURE)
    through_proxy = {**basic(), **PAGE, "Host": "127.0.0.1:8000", "Origin": "https://proc.example.com",
                     "Sec-Fetch-Site": "same-origin", "X-Forwarded-For": "198.51.100.4"}
    c = make_flask_app(TOKEN).test_client()
    refused = c.post(f"/api/procs/precheck/{pk}/reset", headers=through_proxy)
    assert refused.status_code == 403 and "PROC_TRUSTED_ORIGINS" in refused.get_json()["error"]
    monkeypatch.setenv("PROC_TRUSTED_ORIGINS", "https://proc.example.com")
    c = make_flask_app(TOKEN).test_client()
    assert c.post(f"/api/procs/precheck/{pk}/reset", headers=through_proxy).status_code == 200
    assert c.post(f"/api/procs/precheck/{pk}/reset",
                  headers={**through_proxy, "Origin": "https://evil.example"}).status_code == 403


def test_trusted_proxies_take_host_scheme_and_client_from_the_forwarded_headers(monkeypatch):
    monkeypatch.setenv("PROC_TRUSTED_PROXIES", "1")
    monkeypatch.setenv("PROC_ALLOWED_HOSTS", "proc.example.com")
    c = make_flask_app(TOKEN).test_client()
    pk = seed(Precheck, S.FAILURE)
    forwarded = {**basic(user="bob"), **PAGE, "Host": "127.0.0.1:8000", "X-Forwarded-Host": "proc.example.com",
                 "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4",
                 "Origin": "https://proc.example.com", "Sec-Fetch-Site": "same-origin"}
    response = c.post(f"/api/procs/precheck/{pk}/reset", headers=forwarded)
    assert response.status_code == 200 and response.get_json()["by"] == "token:bob"
    assert c.get("/api/status", headers={**bearer(), "Host": "127.0.0.1:8000"}).status_code == 400


def test_trusted_proxies_without_a_token_are_refused_at_startup(monkeypatch):
    monkeypatch.setenv("PROC_TRUSTED_PROXIES", "1")
    with pytest.raises(ConfigurationError, match="PROC_TRUSTED_PROXIES needs PROC_API_TOKEN"):
        make_flask_app()


@pytest.mark.parametrize("name, value", [("PROC_TRUSTED_PROXIES", "many"), ("PROC_TRUSTED_ORIGINS", "proc.example.com"),
                                         ("PROC_METRICS_PUBLIC", "maybe")])
def test_a_wrong_proxy_or_metrics_setting_is_refused_at_startup(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        make_flask_app(TOKEN)


# -- 4: /metrics -----------------------------------------------------------------------------------

def test_with_a_token_metrics_need_the_scrape_token_which_opens_nothing_else(monkeypatch):
    c = make_flask_app(TOKEN, PROC_METRICS_TOKEN=METRICS_TOKEN).test_client()
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers=bearer("wrong" * 8)).status_code == 401
    assert c.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    assert c.get("/metrics", headers=basic(user="prometheus", password=METRICS_TOKEN)).status_code == 200
    assert c.get("/metrics", headers=bearer()).status_code == 200  # the admin token too
    pk = seed(Precheck, S.RUNNING)
    assert c.get("/api/status", headers=bearer(METRICS_TOKEN)).status_code == 401
    assert c.post(f"/api/procs/precheck/{pk}/cancel", headers=bearer(METRICS_TOKEN)).status_code == 401
    assert status_of(pk) == "RUNNING"


def test_proc_metrics_public_opens_metrics_only():
    c = make_flask_app(TOKEN, PROC_METRICS_PUBLIC="1").test_client()
    assert c.get("/metrics", environ_base=REMOTE).status_code == 200
    assert c.get("/api/status", environ_base=REMOTE).status_code == 401


# -- 5: /healthz -----------------------------------------------------------------------------------

def test_healthz_shows_only_booleans_to_anonymous_clients_and_details_with_the_token(monkeypatch):
    config.configure(mongodb_uri=config.get().mongodb_uri.replace("://", "://dbuser:s3cret-pw@", 1)
                     if config.get().embedded_db else config.get().mongodb_uri)
    c = make_flask_app(TOKEN).test_client()
    anonymous = c.get("/healthz")
    assert anonymous.get_json() == {"status": "ok", "database": {"ok": True}, "broker": {"ok": True}}
    detailed = c.get("/healthz", headers=bearer()).get_json()
    assert detailed["database"]["url"] and "s3cret-pw" not in detailed["database"]["url"]
    assert "url" in detailed["broker"]


def test_healthz_with_the_database_down_tells_anonymous_clients_no_more_than_that(monkeypatch):
    from proc.store import db

    def down():
        raise RuntimeError("connection refused by mongodb://dbuser:pa ss/w0rd@db.internal:27017 (topology ...)")

    c = make_flask_app(TOKEN).test_client()
    monkeypatch.setattr(db, "ping", down)
    config.configure(mongodb_uri="mongodb://dbuser:pa ss/w0rd@db.internal:27017/proc")
    anonymous = c.get("/healthz")
    assert anonymous.status_code == 503
    assert anonymous.get_json() == {"status": "unavailable", "database": {"ok": False}, "broker": {"ok": True}}
    detailed = c.get("/healthz", headers=bearer()).get_json()["database"]
    assert detailed["ok"] is False and "connection refused by mongodb://" in detailed["error"]
    for leaked in ("pa ss", "w0rd", "ss/w0rd"):
        assert leaked not in str(detailed), leaked


@pytest.mark.parametrize("url, shown, hidden", [
    ("mongodb://user:p@ss@db1:27017/proc", "mongodb://***@db1:27017/proc", ["p@ss", "ss@"]),
    ("mongodb://user:pa/ss@db1:27017/proc", "mongodb://***", ["pa", "ss"]),
    ("mongodb://user:pa ss@db1:27017/proc", "mongodb://user:***@db1:27017/proc", ["pa ss"]),
    ("mongodb://db1,db2/proc?replicaSet=rs0&authMechanism=MONGODB-AWS"
     "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdz/abc",
     "mongodb://db1,db2/proc?replicaSet=rs0&authMechanism=MONGODB-AWS&authMechanismProperties=***",
     ["FQoG", "abc"]),
    ("mongodb://db1/proc?tls=true&tlsCertificateKeyFilePassword=k3y-pass",
     "mongodb://db1/proc?tls=true&tlsCertificateKeyFilePassword=***", ["k3y-pass"]),
    ("mongodb+srv://u:s3cret@cluster0.example.net/proc?retryWrites=true",
     "mongodb+srv://u:***@cluster0.example.net/proc?retryWrites=true", ["s3cret"]),
    ("redis://:p@ss/w0rd@redis:6379/0", "redis://***", ["p@ss", "w0rd"]),
    ("redis://:pa ss@redis:6379/0", "redis://:***@redis:6379/0", ["pa ss"]),
    ("rediss://default:s3cret@redis:6380/0?ssl_cert_reqs=required&password=again",
     "rediss://default:***@redis:6380/0?ssl_cert_reqs=required&password=***", ["s3cret", "again"]),
    ("amqp://guest:guest-pw@rabbit:5672//", "amqp://guest:***@rabbit:5672//", ["guest-pw"]),
    ("mongodb+srv://", "mongodb+srv://***", []),  # no host: pymongo raises ConfigurationError
])
def test_redaction_parses_urls_as_the_drivers_do_and_keeps_only_safe_parameters(url, shown, hidden):
    assert redact_url(url) == shown
    text = redact_text(f"ServerSelectionTimeoutError: {url}, Timeout: 5s", urls=[url])
    for secret in hidden:
        assert secret not in redact_url(url) and secret not in text, secret


# -- 11: bounded bodies ----------------------------------------------------------------------------

def test_a_body_over_one_mebibyte_is_refused_before_the_view_reads_it(client):
    pk = seed(Precheck, S.RUNNING)
    big = b'{"action": "cancel", "filter": {"status": ["RUNNING"]}, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/api/procs/bulk", data=big, content_type="application/json", headers=PAGE)
    assert response.status_code == 413 and "at most 1048576" in response.get_json()["error"]
    assert status_of(pk) == "RUNNING"
