"""procctl: demo, worker refusal, shell namespace, configuration errors, inspection."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from core_models import Job
from proc import ConfigurationError, config, machine
from proc.store import db
from proc.cli import cli
from proc.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_on_the_embedded_default_and_prints_every_change():
    result = CliRunner().invoke(cli, ["demo", "--no-serve", "--pace", "0", "--uploads", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    for status in ("PENDING", "DISPATCHED", "RUNNING", "WAITING_FOR_RESULT", "SUCCESS", "FAILURE"):
        assert status in out
    assert "broker memory://localhost/ (in-process worker)" in out
    counts = out.split("counts per status:")[1].splitlines()[0]
    # 1 upload + 6 entries (one read too early, failing its first attempt) + 1 project + 9 prechecks + 1 report
    assert counts.strip() == ("READY 0, PENDING 0, DISPATCHED 0, RUNNING 0, WAITING_FOR_RESULT 0, "
                              "SUCCESS 17, FAILURE 1")
    assert "Precheck" in out and "-> DISPATCHED" in out and "Report" in out


@pytest.mark.parametrize("command", [["worker"], ["serve", "--host", "127.0.0.1"]])
def test_separate_server_processes_refuse_the_embedded_database(command):
    config.configure(mongodb_uri=config.EMBEDDED_MONGODB_URI)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert "MONGODB_URI" in result.output and "procctl demo" in result.output


def test_celery_worker_command_refuses_the_embedded_database():
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "CELERY_BROKER_URL")}
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "solo"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "embedded database" in proc.stderr and "MONGODB_URI=mongodb://" in proc.stderr


def test_shell_namespace_has_the_database_and_every_model():
    from proc.cli.shell import shell_namespace

    ns = shell_namespace()
    for name in ("Proc", "ProcessStatus", "process", "Upload", "Entry", "Project", "Precheck", "db"):
        assert name in ns
    assert ns["Upload"].objects.count() == 0


def test_repr_and_describe_show_status_step_worker_errors_and_history():
    job = Job(label="x")
    job.save()
    coll = Job._get_collection()
    machine.transition(machine.Attempt(coll.name, job.pk, 0), "request", machine.Change(fields={"current_process": "noop"}, host="h1"))
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", machine.Change(fields={"worker_hostname": "w1"}, host="w1", note="noop started"))
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "fail", machine.Change(errors=["ValueError: bad"], host="w1"))
    job.reload()
    text = repr(job)
    assert text.startswith(f"<Job {job.pk} FAILURE noop attempt=1 for ")
    described = job.describe()
    assert "status:    FAILURE" in described and "worker:    w1" in described
    assert "- ValueError: bad" in described
    assert "RUNNING" in described and "noop started" in described


def test_settings_from_the_environment_name_the_bad_variable():
    with pytest.raises(ConfigurationError, match="PROC_KIND_SETTINGS is not valid JSON"):
        Settings.from_env({"PROC_KIND_SETTINGS": "{limit: 4"})
    with pytest.raises(ConfigurationError, match="PROC_HEARTBEAT_INTERVAL='soon' is not a number"):
        Settings.from_env({"PROC_HEARTBEAT_INTERVAL": "soon"})
    s = Settings.from_env({"MONGODB_URI": "mongodb://db:27017/prod", "PROC_MODELS": "a.b, c.d",
                           "PROC_KIND_SETTINGS": '{"upload.process_upload": {"limit": 2}}'})
    assert s.models == ("a.b", "c.d") and not s.embedded_db
    assert s.kind_settings["upload.process_upload"]["limit"] == 2


def test_a_bad_database_uri_is_named_with_its_password_hidden(database_uri):
    with pytest.raises(ConfigurationError) as raised:
        db.connect("postgres://admin:hunter2@db/prod")
    assert "postgres://admin:***@db/prod" in str(raised.value) and "hunter2" not in str(raised.value)
    db.connect(database_uri)


@pytest.mark.parametrize("uri, problem", [
    ("mongodb://admin:hunter2@db:27O17/prod", "Port contains non-digit characters"),
    ("mongodb://admin:hunter2@db:99999/prod", "Port must be an integer between 0 and 65535"),
    ("mongodb://db/prod?retryWrite=true", "Unknown option: retrywrite. Did you mean one of (retrywrites"),
    ("mongodb://db/my.prod", "database names cannot contain the character '.'"),
])
def test_a_malformed_database_uri_is_a_clear_error_and_the_next_uri_still_connects(database_uri, uri, problem):
    with pytest.raises(ConfigurationError) as raised:
        db.connect(uri)
    message = str(raised.value)
    assert message.startswith("MONGODB_URI 'mongodb://") and problem in message, message
    assert "Write it as mongodb://" in message and "quote_plus" in message and "hunter2" not in message
    assert db.connect(database_uri) is not None  # nothing of the bad URI is left registered
    db.database().list_collection_names()


def test_kind_settings_from_config_override_the_decorator():
    from proc import registry

    config.configure(kind_settings={"test_job.noop": {"limit": 2, "recovery": "fail"}})
    registry.forget_settings()
    settings = registry.kind_named("test_job.noop").settings
    assert settings.limit == 2 and settings.recovery == "fail"
    config.configure(kind_settings={"test_job.noop": {"limits": 2}})
    registry.forget_settings()
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\) \['limits'\]"):
        registry.kind_named("test_job.noop").settings


def test_unknown_process_options_fail_at_import_time():
    from proc import process

    with pytest.raises(TypeError, match="unknown option"):
        process(limt=3)(lambda self: None)
    with pytest.raises(ConfigurationError, match="recovery must be one of"):
        process(recovery="pray")(lambda self: None)
