"""A real Prometheus server (Debian's ``prometheus``) scrapes a served instance (``gunicorn
api.wsgi:app``, with ``PROC_METRICS_TOKEN``), and ``histogram_quantile`` over proc's
``proc_phase_seconds_bucket`` gives the known p95 within the bucket error."""
from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request

import pytest

from proc.demo.models import Precheck
from proc.machine import buckets, tally
from support import free_port, require, spawn, stop, wait_for
from test_served_security import gunicorn, served  # noqa: F401  (the fixture)
from timing_models import seed_ended

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(240)]

SCRAPE_TOKEN = "prometheus-scrape-token-0123456789abcdef"
RUN = 'phase="run",collection="precheck",method="run"'


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        require("prometheus is missing (scripts/install-system-deps installs Debian's prometheus)")
    return path


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(port: int, expr: str) -> float | None:
    try:
        found = query(port, expr)
    except OSError:
        return None
    return float(found[0]["value"][1]) if found else None


@pytest.fixture
def prometheus(tmp_path):
    """``prometheus(target_port)`` starts a Prometheus that scrapes ``/metrics`` of the target
    every second with the metrics token; returns its port once it answers."""
    started = []

    def start(target: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: proc\n    metrics_path: /metrics\n"
            f"    authorization:\n      credentials: {SCRAPE_TOKEN}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n")
        proc = spawn([prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}"], log=str(tmp_path / "prometheus.log"))
        started.append(proc)
        wait_for(lambda: scalar(port, "vector(1)") == 1.0, timeout=60, interval=0.2,
                 message="prometheus to answer its HTTP API")
        return port

    yield start
    for proc in started:
        stop(proc, timeout=20)


def test_histogram_quantile_over_the_scraped_buckets_gives_the_known_p95(served, prometheus):  # noqa: F811
    target = free_port()
    served(gunicorn(target, "127.0.0.1"), target, PROC_METRICS_TOKEN=SCRAPE_TOKEN)
    port = prometheus(target)
    count = f"sum(proc_phase_seconds_count{{{RUN}}})"
    wait_for(lambda: scalar(port, count) == 0.0, timeout=60, interval=0.2,
             message="a first scrape, before any process ended")
    # 1,000 run phases spread evenly over (10 s, 20 s]: the true nearest-rank p95 is 19.5 s
    values = [10 + 10 * i / 1000 for i in range(1, 1001)]
    seed_ended(Precheck, "run", [{"held": 0.1, "run": v} for v in values])
    tally.flush()
    wait_for(lambda: scalar(port, count) == 1000.0, timeout=60, interval=0.2,
             message="a scrape that sees the 1,000 ended processes")
    expr = 'histogram_quantile(0.95, sum by (le, method) (rate(proc_phase_seconds_bucket{phase="run"}[5m])))'
    found = {r["metric"].get("method"): float(r["value"][1]) for r in query(port, expr)}
    true_p95 = sorted(values)[949]
    assert abs(found["run"] - true_p95) <= buckets.ERROR * true_p95, found
    ended = scalar(port, 'sum(increase(proc_ended_total{collection="precheck",method="run"}[5m]))')
    assert ended is not None and ended >= 1000  # increase() extrapolates, never below what was counted
