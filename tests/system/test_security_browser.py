"""The served app's rules in a real browser (headless Chromium): a page of another site
rebound to this machine (DNS rebinding), and the page behind a reverse proxy that
rewrites ``Host``.

The app runs as the demo serves it (a werkzeug thread of this process, sharing the
database with the test); the proxy is a small ``http.server`` of this test.
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import threading

import pytest

from api_seed import seed
from proc import config
from proc.demo.models import Precheck
from proc.status import ProcessStatus as S
from support import wait_for

pytestmark = pytest.mark.browser

TOKEN = "proxy-browser-token-0123456789abcdefgh"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}

# What a script of the page's origin can do: read the status, and cancel a process as the
# page's own button does (same-origin fetch with the page's header).
ATTACK = """
const done = arguments[arguments.length - 1];
const id = arguments[0];
Promise.all([
  fetch('/api/status?workers=false').then(r => r.status),
  fetch('/api/procs/precheck/' + id + '/cancel',
        {method: 'POST', headers: {'X-Proc-Request': '1'}}).then(r => r.status),
]).then(done, e => done(String(e)));
"""


def status_of(pk) -> str:
    return Precheck._get_collection().find_one({"_id": pk})["process_status"]


@contextlib.contextmanager
def page_server(monkeypatch, **env):
    from proc.demo.run import serve_status_page

    monkeypatch.setenv("FLASK_PROC_REFRESH_SECONDS", "60")
    monkeypatch.setenv("FLASK_PROC_INSPECT_TIMEOUT", "0.2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with serve_status_page("127.0.0.1", 0) as url:
        yield url.split("/projects/")[0]


def test_a_page_rebound_to_this_machine_can_neither_read_the_status_nor_cancel(browser_with, monkeypatch):
    browser = browser_with("--host-resolver-rules=MAP rebind.test 127.0.0.1")
    running = seed(Precheck, S.RUNNING)
    with page_server(monkeypatch) as base:
        port = base.rsplit(":", 1)[1]
        # The control: under its own name, a script of the page's origin reads the status.
        browser.get(f"{base}/projects/admin/check-status/")
        browser.set_script_timeout(20)
        assert browser.execute_async_script(ATTACK.replace("/cancel", "/nosuch"), str(running))[0] == 200
        # Rebound: same address and port, another site's name.
        browser.get(f"http://rebind.test:{port}/projects/admin/check-status/")
        assert "DNS rebinding" in browser.page_source and "Error 400" in browser.page_source
        assert browser.execute_async_script(ATTACK, str(running)) == [400, 400]
    assert status_of(running) == "RUNNING"


class RewritingProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy on 127.0.0.1 that forwards to ``upstream`` with ``Host`` rewritten to
    the upstream's address and the client in ``X-Forwarded-For`` (as nginx's ``proxy_pass``
    does by default, plus the usual header)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ForwardHandler)
        self.upstream = None

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.server_address[1]}"


class ForwardHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        host, port = self.server.upstream
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update({"Host": f"{host}:{port}", "X-Forwarded-For": self.client_address[0]})
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = forward


@contextlib.contextmanager
def rewriting_proxy():
    proxy = RewritingProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def click_reset(browser, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.execute_script("window.confirm = function () { return true; };")
    browser.find_element(By.XPATH, "//button[normalize-space()='Reset to READY']").click()


@pytest.mark.parametrize("trusted", [False, True], ids=["no-setting", "PROC_TRUSTED_ORIGINS"])
def test_behind_a_proxy_that_rewrites_host_the_pages_actions_work_with_trusted_origins(
        browser, monkeypatch, trusted):
    from selenium.webdriver.common.by import By

    config.configure(api_token=TOKEN)
    failed = seed(Precheck, S.FAILURE)
    with rewriting_proxy() as proxy:
        env = {"PROC_TRUSTED_ORIGINS": proxy.origin} if trusted else {}
        with page_server(monkeypatch, **env) as base:
            proxy.upstream = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
            signed_in = proxy.origin.replace("http://", f"http://alice:{TOKEN}@")
            click_reset(browser, f"{signed_in}/projects/admin/check-status/procs/precheck/{failed}")
            said = wait_for(lambda: browser.find_element(By.ID, "action-result").text, timeout=15,
                            message="the action's result on the page")
            if trusted:
                assert said.startswith("reset done: now READY"), said
                assert status_of(failed) == "READY"
                assert Precheck._get_collection().find_one({"_id": failed})["history"][-1]["by"] == "token:alice"
            else:
                assert "cross-origin request refused" in said and "PROC_TRUSTED_ORIGINS" in said, said
                assert status_of(failed) == "FAILURE"
