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


def series(text: str, name: str) -> list[tuple[dict, float]]:
    """``(labels, value)`` of each sample of ``name`` in the exposition ``text``."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
            found.append((labels, float(line.split()[-1])))
    return found


def value(text: str, name: str, **labels) -> float:
    (got,) = [v for l, v in series(text, name) if all(l.get(k) == w for k, w in labels.items())]
    return got


def test_metrics_show_phase_histograms_ended_counters_and_timeouts_per_kind(client):
    seed_ended(Precheck, "run", [{"held": float(i), "queued": 2.0, "run": 10.0 * i} for i in range(1, 21)])
    seed_ended(Precheck, "run", [{"held": 0.5, "run": 1.0}] * 5, status="FAILURE")
    seed(Precheck, S.DISPATCHED, age=90)
    text = metrics(client)
    kind = 'collection="precheck",method="run"'
    pk = {"collection": "precheck", "method": "run"}
    assert "# TYPE proc_phase_seconds histogram" in text and "# TYPE proc_ended_total counter" in text
    # run: five 1.0 (the failures), then 10 .. 200; le counts are exact (le is a bucket bound)
    for le, n in (("1.0", 5), ("10.0", 6), ("100.0", 15), ("200.0", 25), ("+Inf", 25)):
        assert value(text, "proc_phase_seconds_bucket", **pk, phase="run", le=le) == n, le
    assert len([1 for l, _ in series(text, "proc_phase_seconds_bucket") if l.items() >= {**pk, "phase": "run"}.items()]) == 22
    assert value(text, "proc_phase_seconds_count", **pk, phase="run") == 25
    assert value(text, "proc_phase_seconds_sum", **pk, phase="run") == 5 + 10 * sum(range(1, 21))
    assert value(text, "proc_phase_seconds_count", **pk, phase="queued") == 20
    assert value(text, "proc_phase_seconds_count", **pk, phase="waiting") == 0
    assert value(text, "proc_ended_total", **pk, status="SUCCESS") == 20
    assert value(text, "proc_ended_total", **pk, status="FAILURE") == 5
    seed_ended(Precheck, "run", [{"run": 3.0}], ago=86400 * 40)  # far older than any window: still counted
    assert value(metrics(client), "proc_ended_total", **pk, status="SUCCESS") == 21
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


ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
METRIC = re.compile(r"\bproc_[a-z_]+\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        require("promtool is missing (scripts/install-system-deps installs Debian's prometheus)")
    return path


def exposed(client) -> set[str]:
    """The names of the series /metrics exposes (a histogram's ``_bucket``, ``_sum``, ``_count``)."""
    text = metrics(client).splitlines()
    return ({line.split()[2] for line in text if line.startswith("# TYPE ")}
            | {re.split(r"[{ ]", line)[0] for line in text if line and not line.startswith("#")})


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
                         timeout=60, cwd=ROOT / "tests" / "api" / "promtool")
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


# -- on RabbitMQ ------------------------------------------------------------------------------------


@pytest.fixture
def rabbit_app(rabbitmq_url):
    """proc sends to RabbitMQ (a virtual host of its own on the run's private node)."""
    from proc.run import messaging
    from support import make_test_app

    app = make_test_app(rabbitmq_url)
    messaging.set_app(app)
    yield app
    messaging.set_app(None)
    app.close()


def test_the_page_and_metrics_read_depth_and_consumers_of_each_queue_from_rabbitmq(rabbit_app, flask_app):
    """A passive declare gives both (no management plugin); the broker counts a consumer the
    inspect broadcast never hears from (a plain AMQP client here)."""
    from kombu import Connection

    from proc.names import DEFAULT_QUEUE

    for _ in range(3):
        rabbit_app.send_task("proc.test.waiting", queue=DEFAULT_QUEUE)
    text = metrics(flask_app.test_client())
    assert "proc_broker_up 1.0" in text
    assert value(text, "proc_queue_messages", queue=DEFAULT_QUEUE) == 3
    assert value(text, "proc_queue_consumers", queue=DEFAULT_QUEUE) == 0
    seed(Precheck, S.DISPATCHED, age=600)  # past its queue timeout: the page explains it
    with Connection(rabbit_app.conf.broker_url) as conn:
        queue = rabbit_app.amqp.queues[DEFAULT_QUEUE]
        conn.Consumer(queue, channel=conn.channel(), prefetch_count=1, callbacks=[lambda *a: None]).consume()
        conn.drain_events(timeout=5)  # one delivered, held unacknowledged: two left waiting
        status = flask_app.test_client().get("/api/status?workers=false").get_json()
        [row] = [q for q in status["queues"] if q["name"] == DEFAULT_QUEUE]
        assert (row["depth"], row["broker_consumers"]) == (2, 1)
        assert status["broker"]["reachable"] is True and status["broker"]["url"].startswith("amqp://guest:***@")
        page = flask_app.test_client().get("/projects/admin/check-status/").get_data(as_text=True)
    assert "which the broker counts 1 consumer(s) of; no worker answered the inspect broadcast" in page


def test_metrics_say_the_broker_is_down_when_rabbitmq_does_not_answer(flask_app):
    from proc.run import messaging
    from support import free_port, make_test_app

    app = make_test_app(f"amqp://guest:guest@127.0.0.1:{free_port()}//")  # nothing listens there
    messaging.set_app(app)
    try:
        text = metrics(flask_app.test_client())
    finally:
        messaging.set_app(None)
        app.close()
    assert "proc_broker_up 0.0" in text and "proc_queue_messages{" not in text
