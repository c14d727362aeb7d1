"""POST /api/procs/<collection>/<id>/reset|redispatch|cancel, cross-site protection, and the CLIs."""
from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId
from click.testing import CliRunner

from api_seed import TOKEN, basic, bearer, seed
from proc.cli import cli
from proc.demo.models import Precheck, Upload
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import wait_for

PAGE = {"X-Proc-Request": "1"}


def raw(cls, pk):
    return cls._get_collection().find_one({"_id": pk})


def post(c, url, headers=None):
    return c.post(url, headers={**PAGE, **(headers or {})})


def test_reset_puts_a_failed_process_back_to_ready_recording_who(secured):
    pk = seed(Precheck, S.FAILURE, errors=["boom"])
    response = post(secured, f"/api/procs/precheck/{pk}/reset", basic(user="alice"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["action"] == "reset" and body["by"] == "token:alice"
    assert body["process"]["status"] == "READY"
    last = raw(Precheck, pk)["history"][-1]
    assert last["status"] == "READY" and last["by"] == "token:alice" and last["time"] is not None


def test_reset_and_redispatch_of_a_healthy_running_process_answer_409_unless_forced(client):
    pk = seed(Precheck, S.RUNNING, age=5)
    for action in ("reset", "redispatch"):
        response = post(client, f"/api/procs/precheck/{pk}/{action}")
        assert response.status_code == 409
        assert "healthy" in response.get_json()["error"]
    assert raw(Precheck, pk)["process_status"] == "RUNNING"
    response = post(client, f"/api/procs/precheck/{pk}/reset?force=true")
    assert response.status_code == 200 and response.get_json()["process"]["status"] == "READY"


def test_redispatch_sends_a_stuck_process_again_as_a_new_attempt(client):
    pk = seed(Upload, S.DISPATCHED, age=3600)
    before = raw(Upload, pk)
    response = post(client, f"/api/procs/upload/{pk}/redispatch")
    assert response.status_code == 200
    after = raw(Upload, pk)
    assert after["attempt"] == before["attempt"] + 1
    assert after["celery_task_id"] != before["celery_task_id"]
    assert after["process_status"] in ("PENDING", "DISPATCHED")
    redispatched = [h for h in after["history"] if h.get("event") == "redispatch"]
    assert redispatched[-1]["by"].startswith("unauthenticated:")


def test_cancel_ends_a_running_process_as_failure_cancelled(secured):
    pk = seed(Upload, S.RUNNING, age=5)
    response = post(secured, f"/api/procs/upload/{pk}/cancel", bearer())
    assert response.status_code == 200
    after = raw(Upload, pk)
    assert after["process_status"] == "FAILURE"
    assert after["errors"] == ["cancelled by token:bearer"]
    assert after["history"][-1]["by"] == "token:bearer"


@pytest.mark.broker
def test_cancel_revokes_the_celery_task(worker, flask_app):
    from celery.worker import state

    pk = seed(Upload, S.DISPATCHED, age=5)
    task_id = raw(Upload, pk)["celery_task_id"]
    response = post(flask_app.test_client(), f"/api/procs/upload/{pk}/cancel")
    assert response.status_code == 200
    wait_for(lambda: task_id in state.revoked, timeout=10, message="the worker to record the revoke")


def test_cancel_with_terminate_answers_202_saying_a_threads_pool_cannot_stop_running_code(client):
    pk = seed(Upload, S.RUNNING, age=5, worker_pool="threads")
    response = post(client, f"/api/procs/upload/{pk}/cancel?terminate=true")
    assert response.status_code == 202
    [plan] = response.get_json()["terminate"]
    assert plan["outcome"] == "cannot" and plan["pool"] == "threads" and plan["attempt"] == 1
    assert "threads pool of celery@seed-host cannot stop running code" in plan["detail"]
    after = raw(Upload, pk)
    assert after["process_status"] == "FAILURE"
    assert after["history"][-1]["event"] == "cannot_terminate"
    assert after["history"][-1]["note"] == plan["detail"]


def test_cancel_with_terminate_of_a_pending_process_has_nothing_to_stop(client):
    pk = seed(Upload, S.PENDING, age=5)
    response = post(client, f"/api/procs/upload/{pk}/cancel?terminate=1")
    assert response.status_code == 202
    [plan] = response.get_json()["terminate"]
    assert plan["outcome"] == "not_running" and "it was PENDING" in plan["detail"]
    assert [h["event"] for h in raw(Upload, pk)["history"]][-1] == "fail"


@pytest.mark.parametrize("status", [S.READY, S.SUCCESS])
def test_cancel_of_a_process_that_is_not_running_answers_409(client, status):
    pk = seed(Precheck, status)
    response = post(client, f"/api/procs/precheck/{pk}/cancel")
    assert response.status_code == 409
    assert raw(Precheck, pk)["process_status"] == status.value


def test_reset_of_a_successful_process_answers_409(client):
    pk = seed(Precheck, S.SUCCESS)
    assert post(client, f"/api/procs/precheck/{pk}/reset").status_code == 409


@pytest.mark.parametrize("url, status, parameter", [
    ("/api/procs/precheck/zzz/reset", 400, "id"),
    (f"/api/procs/precheck/{ObjectId()}/cancel", 404, "id"),
    (f"/api/procs/nosuch/{ObjectId()}/reset", 404, "collection"),
    ("/api/procs/precheck/{pk}/explode", 404, "action"),
    ("/api/procs/precheck/{pk}/reset?force=perhaps", 400, "force"),
    ("/api/procs/precheck/{pk}/cancel?terminate=perhaps", 400, "terminate"),
    ("/api/procs/precheck/{pk}/reset?terminate=true", 400, "terminate"),
])
def test_bad_action_input_answers_400_or_404_naming_the_parameter(client, url, status, parameter):
    pk = seed(Precheck, S.FAILURE)
    response = post(client, url.format(pk=pk))
    assert response.status_code == status
    assert response.get_json()["parameter"] == parameter
    assert raw(Precheck, pk)["process_status"] == "FAILURE"


@pytest.mark.parametrize("headers", [
    {},  # a plain form post: no X-Proc-Request, no bearer token
    {"X-Proc-Request": "1", "Origin": "https://evil.example"},
    {"X-Proc-Request": "1", "Sec-Fetch-Site": "cross-site"},
    {"X-Proc-Request": "1", "Origin": "null"},
])
def test_cross_site_posts_are_refused_even_with_the_browsers_basic_auth(secured, headers):
    pk = seed(Precheck, S.FAILURE)
    response = secured.post(f"/api/procs/precheck/{pk}/reset", headers={**basic(), **headers})
    assert response.status_code == 403
    assert raw(Precheck, pk)["process_status"] == "FAILURE"


def test_same_origin_posts_from_the_page_and_bearer_posts_are_accepted(secured):
    pk = seed(Precheck, S.FAILURE)
    page_headers = {**basic(), "X-Proc-Request": "1", "Origin": "http://localhost",
                    "Sec-Fetch-Site": "same-origin"}
    assert secured.post(f"/api/procs/precheck/{pk}/reset", headers=page_headers).status_code == 200
    other = seed(Precheck, S.FAILURE)
    assert secured.post(f"/api/procs/precheck/{other}/reset", headers=bearer()).status_code == 200
    assert secured.post(f"/api/procs/precheck/{other}/reset").status_code == 401


def test_without_a_token_posts_still_need_the_page_header(client):
    pk = seed(Precheck, S.FAILURE)
    assert client.post(f"/api/procs/precheck/{pk}/reset").status_code == 403
    assert post(client, f"/api/procs/precheck/{pk}/reset").status_code == 200


def test_procctl_admin_actions_record_the_os_user(monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "operator7")
    runner = CliRunner()
    failed = seed(Precheck, S.FAILURE)
    result = runner.invoke(cli, ["admin", "reset", "precheck", str(failed)])
    assert result.exit_code == 0, result.output
    assert "READY" in result.output
    assert raw(Precheck, failed)["history"][-1]["by"] == "cli:operator7"
    running = seed(Precheck, S.RUNNING)
    result = runner.invoke(cli, ["admin", "reset", "precheck", str(running)])
    assert result.exit_code == 1 and "healthy" in result.output
    assert runner.invoke(cli, ["admin", "reset", "--force", "precheck", str(running)]).exit_code == 0
    other = seed(Precheck, S.RUNNING)
    assert runner.invoke(cli, ["admin", "cancel", "precheck", str(other)]).exit_code == 0
    assert raw(Precheck, other)["errors"] == ["cancelled by cli:operator7"]
    result = runner.invoke(cli, ["admin", "redispatch", "precheck", "not-an-id"])
    assert result.exit_code == 2 and "not an id" in result.output


def test_procctl_serve_refuses_another_address_without_a_token_and_the_embedded_database():
    from proc import config

    config.configure(mongodb_uri=config.EMBEDDED_MONGODB_URI)
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0: no PROC_API_TOKEN is set" in result.output
    result = runner.invoke(cli, ["serve"])
    assert result.exit_code == 2 and "embedded database" in result.output
    config.configure(api_token=TOKEN)
    result = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--dev"])
    assert result.exit_code == 2 and "embedded database" in result.output  # past the bind check


def test_procctl_serve_configures_gunicorn_to_load_api_wsgi():
    from proc.cli.serve import GunicornServer

    server = GunicornServer({"bind": "127.0.0.1:8123", "workers": 3, "threads": 2, "worker_class": "gthread"})
    assert server.cfg.bind == ["127.0.0.1:8123"]
    assert server.cfg.workers == 3 and server.cfg.threads == 2
