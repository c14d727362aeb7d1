"""``make bench`` as the README gives it (``python -m benchmarks``), at smoke sizes, as a process
of its own: every benchmark still runs to its report on both tiers (the embedded database, then
this run's real server through ``MONGODB_URI``; ``bench_calls`` counts on the embedded one only). The figures themselves are not asserted: at
these sizes they are noise; ``docs/database-tiers.md`` has the measured ones."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import support

pytestmark = [pytest.mark.real_server, pytest.mark.broker, pytest.mark.timeout(420)]

NAMES = ("lifecycle", "status", "sweep", "datafix", "bulk", "timings", "calls")


def test_every_benchmark_runs_to_its_report_on_both_tiers(database_uri, redis_url, tmp_path):
    log = tmp_path / "bench.log"
    env = {**os.environ, "MONGODB_URI": database_uri, "CELERY_BROKER_URL": redis_url}
    proc = support.spawn([sys.executable, "-m", "benchmarks", "--smoke"], env=env, log=str(log))
    try:
        code = proc.wait(timeout=400)
    except subprocess.TimeoutExpired:
        support.stop(proc)
        pytest.fail(f"python -m benchmarks --smoke did not end within 400 s:\n{log.read_text()[-3000:]}")
    out = log.read_text()
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
    # one headline ratio per tier, as docs/database-tiers.md quotes them
    assert re.search(r"ratio \(a'\)/\(b\).*?\d+\.\d+x\s+\d+\.\d+x", ran["lifecycle"]), ran["lifecycle"][-3000:]
