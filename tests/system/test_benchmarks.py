"""The README's benchmark commands, small, each as a process of its own on the real tier:
``make bench`` (``python -m benchmarks --smoke``: every benchmark still runs to its report on both
tiers, the embedded database and this run's server through ``MONGODB_URI``; ``bench_calls``
counts on the embedded one only) and ``python -m benchmarks.explain_plans``. The timings are not
asserted: at these sizes they are noise; ``docs/database-tiers.md`` has the measured ones."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import support

pytestmark = [pytest.mark.real_server, pytest.mark.broker, pytest.mark.timeout(500)]

NAMES = ("lifecycle", "status", "sweep", "datafix", "bulk", "timings", "calls", "watch", "brokers")


def run(args: list[str], env: dict, log, timeout: float) -> tuple[int, str]:
    """``python -m ARGS`` as a process of its own (and its process group, servers included,
    stopped if it overruns ``timeout``): its exit code and output."""
    proc = support.spawn([sys.executable, "-m", *args], env=env, log=str(log))
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        support.stop(proc)
        pytest.fail(f"python -m {' '.join(args)} did not end within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
    return code, log.read_text()


def test_every_benchmark_runs_to_its_report_on_both_tiers(database_uri, redis_url, tmp_path):
    env = {**os.environ, "MONGODB_URI": database_uri, "CELERY_BROKER_URL": redis_url}
    code, out = run(["benchmarks", "--smoke"], env, tmp_path / "bench.log", 480)
    assert code == 0, out[-4000:]
    sections = re.split(r"^=== python -m benchmarks\.bench_(\w+) ", out, flags=re.M)[1:]
    ran = dict(zip(sections[::2], sections[1::2]))
    assert list(ran) == list(NAMES), out[-4000:]
    server = database_uri.rsplit("/", 1)[0].split("://", 1)[1]
    for name, text in ran.items():
        assert f"=== bench_{name}: exit 0" in text, text[-3000:]
        if name == "calls":  # the embedded tier only: Python calls counted in this process
            assert re.search(r"ratio calls \(b\)/\(a'\)\s+\d+\.\d+x", text), text[-3000:]
            continue
        assert re.search(r"^\s*embedded\s+= embedded database", text, re.M), (name, text[-3000:])
        assert re.search(rf"^\s*real\s+= MONGODB_URI mongodb://{re.escape(server)}/", text, re.M), \
            (name, text[-3000:])
    # bench_watch: both sizes on both tiers, the real tier with what the server examined
    assert re.search(r"^\s*real\s+1,000\s+.*\d+/\d+ ex", ran["watch"], re.M), ran["watch"][-3000:]
    assert re.search(r"real: largest / smallest history: /metrics \d+\.\d+x", ran["watch"]), ran["watch"][-3000:]
    # one headline ratio per tier, as docs/database-tiers.md quotes them
    assert re.search(r"ratio \(a'\)/\(b\).*?\d+\.\d+x\s+\d+\.\d+x", ran["lifecycle"]), ran["lifecycle"][-3000:]
    # bench_brokers: Redis and RabbitMQ with confirms on and off, side by side, on both tiers
    for tier in ("embedded", "real"):
        assert re.search(rf"{tier}: \(a\) RabbitMQ confirms on / off \(the cost of confirms, proc\)\s+\d+\.\d+x",
                         ran["brokers"]), ran["brokers"][-3000:]


def test_explain_plans_prints_the_plan_of_every_query_the_code_sends(tmp_path):
    """``python -m benchmarks.explain_plans`` (the README's query plans), small, as a process of
    its own: it starts its own SecantusDB, records what the sweep, the API and the datafix send,
    and explains each; the plans docs/database-tiers.md quotes are what it finds."""
    import json

    out = tmp_path / "plans.json"
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}  # the SecantusDB column alone
    code, text = run(["benchmarks.explain_plans", "--processes", "200", "--stuck", "10", "--legacy-docs", "100",
                      "--json", str(out)], env, tmp_path / "plans.log", 240)
    assert code == 0, text[-4000:]
    rows = json.loads(out.read_text())
    assert {r["where"] for r in rows} >= {
        "sweep: detection (proc.monitor.stuck.find)", "sweep: recovery (proc.monitor.sweep)", "GET /api/status",
        "GET /api/procs", "GET /api/procs?cursor= (next page)", "datafix upgrade (migrations.runner rewrite)"}
    assert all(r["SecantusDB plan"] for r in rows), [r for r in rows if not r["SecantusDB plan"]]
    running = [r for r in rows if r["filter (sort)"] == "{process_status:RUNNING,heartbeat:{$lt:<time>}}"]
    assert running and all(r["SecantusDB plan"] == r["mongod can use (derived)"] == "IXSCAN process_status_1_heartbeat_1"
                           for r in running), running
