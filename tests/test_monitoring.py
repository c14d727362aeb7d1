"""Where time goes on /metrics, and the shipped monitoring (docs/monitoring/): alert rules
checked by promtool, a Grafana dashboard, and every metric either names exposed by /metrics."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from api import phase_metrics
from api_seed import seed
from proc.demo.models import Precheck, Upload
from proc.status import ProcessStatus as S
from support import require
from timing_models import seed_ended


def metrics(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_metrics_show_phase_quantiles_ended_failures_and_timeouts_per_kind(client):
    seed_ended(Precheck, "run", [{"held": float(i), "queued": 2.0, "run": 10.0 * i} for i in range(1, 21)])
    seed_ended(Precheck, "run", [{"held": 0.5, "run": 1.0}] * 5, status="FAILURE")
    seed(Precheck, S.DISPATCHED, age=90)
    text = metrics(client)
    kind = 'collection="precheck",method="run"'
    # run: five 1.0 (the failures), then 10 .. 200: nearest ranks 13 and 24 of 25
    assert f'proc_phase_quantile_seconds{{{kind},phase="run",quantile="0.5"}} 80.0' in text
    assert f'proc_phase_quantile_seconds{{{kind},phase="run",quantile="0.95"}} 190.0' in text
    assert f'proc_phase_quantile_seconds{{{kind},phase="queued",quantile="0.95"}} 2.0' in text
    assert f'proc_phase_ended{{{kind},phase="held"}} 25.0' in text
    assert f'proc_phase_ended{{{kind},phase="queued"}} 20.0' in text
    assert f'proc_phase_ended{{{kind},phase="waiting"}} 0.0' in text
    assert 'phase="waiting",quantile' not in text  # no process waited: no sample
    assert f"proc_ended_last_hour{{{kind}}} 25.0" in text and f"proc_failures_last_hour{{{kind}}} 5.0" in text
    assert f"proc_queue_timeout_seconds{{{kind}}} 300.0" in text
    line = next(l for l in text.splitlines()
                if l.startswith(f'proc_kind_oldest_age_seconds{{{kind},status="DISPATCHED"}}'))
    assert 89 <= float(line.split()[-1]) < 120
    assert 'proc_kind_oldest_age_seconds{collection="upload",method="process_upload",status="RUNNING"} 0.0' in text


def test_workers_and_broker_come_from_the_pages_look_cached_for_the_refresh_interval(client, monkeypatch):
    looks = []
    original = phase_metrics.broker.look

    def counted(*args, **kw):
        looks.append(args)
        return original(*args, **kw)

    monkeypatch.setattr(phase_metrics.broker, "look", counted)
    first, second = metrics(client), metrics(client)
    assert len(looks) == 1  # the second scrape, within PROC_REFRESH_SECONDS, reused the look
    for text in (first, second):
        assert "proc_broker_up 1.0" in text and "proc_workers_alive 0.0" in text


def test_a_live_worker_is_counted(client, worker):
    assert "proc_workers_alive 1.0" in metrics(client)


def test_the_existing_metrics_keep_their_names_and_labels(client):
    seed(Upload, S.RUNNING)
    text = metrics(client)
    for family, labels in (("proc_processes", "collection,method,status"), ("proc_oldest_age_seconds", "status"),
                           ("proc_concurrency_limit", "kind"), ("proc_concurrency_in_use", "kind")):
        line = next(l for l in text.splitlines() if l.startswith(family + "{"))
        assert sorted(p.split("=")[0] for p in line[len(family) + 1:line.index("}")].split(",")) == sorted(labels.split(","))


ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
METRIC = re.compile(r"\bproc_[a-z_]+\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        require("promtool is missing (scripts/install-system-deps installs Debian's prometheus)")
    return path


def exposed(client) -> set[str]:
    return {line.split()[2] for line in metrics(client).splitlines() if line.startswith("# TYPE ")}


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_promtool_accepts_the_alert_rules():
    run = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 6 rules found" in run.stdout


def test_each_alert_fires_on_series_that_break_its_rule_and_not_otherwise():
    run = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT / "tests" / "promtool")
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_rules_cover_each_situation_the_operators_asked_for():
    names = set(rule_expressions())
    assert names == {"ProcNeedsAttention", "ProcDispatchedPastQueueTimeout", "ProcQueuedP95AboveHalfQueueTimeout",
                     "ProcNoLiveWorker", "ProcBrokerDown", "ProcFailureRateHigh"}


def test_every_metric_the_rules_and_the_dashboard_name_is_exposed_by_metrics(client):
    available = exposed(client)
    named = {m for expr in [*rule_expressions().values(), *dashboard_expressions()] for m in METRIC.findall(expr)}
    assert len(named) >= 10
    assert named <= available, f"not on /metrics: {sorted(named - available)}"


def test_the_dashboard_is_json_with_panels_that_each_query_something():
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert board["title"] and len(panels) >= 10
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for p in panels:
        assert p["title"] and p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    assert any("phase=\"queued\"" in t["expr"] for p in panels for t in p["targets"])
