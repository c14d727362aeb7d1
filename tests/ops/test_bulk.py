"""POST /api/procs/bulk (dry run and real run), GET /api/bulk-actions, and procctl admin's
filter form: the single action's rules per document, the actor in each history, skipped
documents with their reason, a fixed number of round trips per batch, the size limit, and
bad input answered 400 / exit 2 with nothing written."""
from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from api_seed import basic, seed
from proc import config
from proc.ops import bulk
from proc.cli import cli
from proc.demo.models import Entry, Precheck, Upload
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow
from support import CommandCounter

PAGE = {"X-Proc-Request": "1"}


def raw(cls, pk):
    return cls._get_collection().find_one({"_id": pk})


def post(client, body, headers=None):
    return client.post("/api/procs/bulk", json=body, headers={**PAGE, **(headers or {})})


def snapshot():
    """Every stored process and audit record, to show that nothing was written."""
    docs = {cls.__name__: sorted(map(str, cls._get_collection().find({}, {"_id": 0, "history": 0}))) for cls in
            (Precheck, Upload, Entry)}
    return docs, bulk_records()


def bulk_records():
    from proc.store import db

    return list(db.database()[bulk.AUDIT].find({}))


def test_a_dry_run_counts_and_samples_what_would_change_and_writes_nothing(client):
    failed = [seed(Entry, S.FAILURE, errors=[f"boom {n}"], age=100 + n) for n in range(25)]
    healthy = seed(Precheck, S.RUNNING, age=5)
    seed(Precheck, S.SUCCESS)
    before = snapshot()
    body = post(client, {"action": "reset", "filter": {"status": ["FAILURE", "RUNNING"]}, "dry_run": True}).get_json()
    assert body["matched"] == 26 and body["would_change"] == 25
    assert len(body["sample"]) == 20
    assert body["sample"][0]["id"] == str(failed[0]) and body["sample"][0]["last_error"] == "boom 0"
    assert str(healthy) not in {s["id"] for s in body["sample"]}
    assert snapshot() == before


def test_a_real_reset_changes_each_through_the_machine_with_the_actor_and_skips_the_rest(secured):
    failed = [seed(Entry, S.FAILURE, age=100) for _ in range(3)]
    healthy = seed(Precheck, S.RUNNING, age=5)
    stuck = seed(Upload, S.RUNNING, age=900, heartbeat=utcnow() - timedelta(seconds=600))
    done = seed(Precheck, S.SUCCESS)
    body = post(secured, {"action": "reset", "filter": {"status": "FAILURE,RUNNING,SUCCESS"}},
                basic(user="alice")).get_json()
    assert body["changed"] == 4 and body["by"] == "token:alice"
    reasons = {s["id"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {str(healthy), str(done)}
    assert "healthy" in reasons[str(healthy)] and "force" in reasons[str(healthy)]
    assert reasons[str(done)] == "cannot reset a process that is SUCCESS"
    for cls, pk in [(Entry, failed[0]), (Upload, stuck)]:
        last = raw(cls, pk)["history"][-1]
        assert raw(cls, pk)["process_status"] == "READY"
        assert last["event"] == "reset" and last["by"] == "token:alice" and "bulk" in last["note"]
    assert raw(Precheck, healthy)["process_status"] == "RUNNING"
    forced = post(secured, {"action": "reset", "filter": {"ids": [f"precheck/{healthy}"]}, "force": True},
                  basic()).get_json()
    assert forced["changed"] == 1 and raw(Precheck, healthy)["process_status"] == "READY"


def test_every_real_call_is_audited_once_and_listed_newest_first(client):
    seed(Entry, S.FAILURE)
    post(client, {"action": "reset", "filter": {"status": ["FAILURE"]}, "dry_run": True})
    assert bulk_records() == []
    post(client, {"action": "reset", "filter": {"status": ["FAILURE"], "older_than": "0s"}})
    post(client, {"action": "cancel", "filter": {"kind": "precheck.run"}})
    items = client.get("/api/bulk-actions").get_json()["items"]
    assert [i["action"] for i in items] == ["cancel", "reset"]
    assert items[1]["filter"] == {"status": ["FAILURE"], "older_than": "0s"}
    assert items[1]["matched"] == 1 and items[1]["changed"] == 1 and items[1]["skipped"] == 0
    assert items[1]["by"].startswith("unauthenticated:") and items[1]["time"].endswith("Z")
    assert client.get("/api/bulk-actions?limit=0").status_code == 400


@pytest.mark.parametrize("action, status", [("reset", S.FAILURE), ("redispatch", S.FAILURE),
                                            ("cancel", S.RUNNING)])
def test_a_process_changed_in_the_meantime_is_skipped_with_its_reason_never_forced(client, monkeypatch,
                                                                                    action, status):
    first, second = seed(Entry, status), seed(Entry, status)
    judged = bulk.plan

    def plan_then_someone_else_acts(*args, **kwargs):
        found = judged(*args, **kwargs)
        Entry._get_collection().update_one({"_id": second}, {"$set": {"process_status": "PENDING"},
                                                              "$inc": {"attempt": 1}})
        return found

    monkeypatch.setattr(bulk, "plan", plan_then_someone_else_acts)
    body = post(client, {"action": action, "filter": {"ids": [f"entry/{first}", f"entry/{second}"]},
                         "force": action != "cancel"}).get_json()
    assert body["changed"] == 1
    assert body["skipped"] == [{"collection": "entry", "id": str(second),
                                "reason": "changed in the meantime (now PENDING at attempt 2); not forced"}]
    assert raw(Entry, second)["history"][-1]["note"] == "seeded by the test"
    mine = [h for h in raw(Entry, first)["history"] if h["event"] == bulk.EVENTS[action]]
    assert mine[-1]["by"].startswith("unauthenticated:") and "(bulk " in mine[-1]["note"]


def test_bulk_cancel_ends_running_processes_and_their_children(client):
    parent = seed(Upload, S.WAITING_FOR_RESULT, age=5)
    parent_raw = raw(Upload, parent)
    from proc.machine import Attempt

    child = seed(Entry, S.RUNNING, age=5, parent={"collection": "upload", "id": parent, "attempt": 1},
                 parent_key=Attempt.of("upload", parent_raw).key)
    other = seed(Precheck, S.DISPATCHED, age=5)
    body = post(client, {"action": "cancel", "filter": {"kind": "upload"}}).get_json()
    assert body["changed"] == 1
    assert raw(Upload, parent)["errors"][-1].startswith("cancelled by unauthenticated:")
    assert raw(Entry, child)["process_status"] == "FAILURE"
    assert "(with its parent)" in raw(Entry, child)["errors"][-1]
    assert raw(Precheck, other)["process_status"] == "DISPATCHED"


def test_bulk_redispatch_sends_each_failed_process_again_as_a_new_attempt(client):
    failed = [seed(Entry, S.FAILURE, errors=["boom"]) for _ in range(3)]
    before = {pk: raw(Entry, pk) for pk in failed}
    body = post(client, {"action": "redispatch", "filter": {"status": ["FAILURE"], "kind": "entry.process_entry"}}).get_json()
    assert body["changed"] == 3 and body["skipped"] == []
    for pk in failed:
        after = raw(Entry, pk)
        assert after["attempt"] == before[pk]["attempt"] + 1
        assert after["celery_task_id"] != before[pk]["celery_task_id"]
        assert after["process_status"] == "DISPATCHED"
        assert [h["by"] for h in after["history"] if h["event"] == "redispatch"][-1].startswith("unauthenticated:")


@pytest.mark.parametrize("action, status", [("reset", S.FAILURE), ("redispatch", S.FAILURE),
                                            ("cancel", S.RUNNING)])
def test_the_same_round_trips_for_20_or_200_processes_at_any_mix_of_attempts(client, monkeypatch, action, status):
    from proc.run import checks

    def trips(n):
        ids = [seed(Entry, status, attempt=i % 9 + 1) for i in range(n)]  # a mix of attempts
        counter = CommandCounter(monkeypatch)
        body = post(client, {"action": action, "filter": {"status": [status.value]}, "force": True}).get_json()
        assert body["changed"] == n, body
        calls = list(counter.calls)
        monkeypatch.undo()
        Entry._get_collection().delete_many({"_id": {"$in": ids}})
        # A cursor's further batches (getMore, real server only) are the same reads continued; the
        # monitor's deadline buckets are claimed once per bucket of time, whatever the count.
        return [c for c in calls if c[0] != "getMore" and c[1] != checks.BUCKETS]

    small, large = trips(20), trips(200)
    assert small == large
    assert not [c for c in large if c[0] in ("find_one", "find_one_and_update")]


def test_a_filter_matching_more_than_the_limit_answers_400_and_writes_nothing(flask_app):
    from support import make_flask_app

    small = make_flask_app(PROC_BULK_LIMIT=3).test_client()
    for _ in range(4):
        seed(Entry, S.FAILURE)
    before = snapshot()
    for dry in (True, False):
        response = post(small, {"action": "reset", "filter": {"status": ["FAILURE"]}, "dry_run": dry})
        assert response.status_code == 400
        assert response.get_json()["parameter"] == "filter" and "narrow it" in response.get_json()["error"]
    assert snapshot() == before
    assert post(small, {"action": "reset", "filter": {"status": ["FAILURE"], "ids": []}, "dry_run": True}).status_code == 400


@pytest.mark.parametrize("body, parameter", [
    ({"action": "explode", "filter": {}}, "action"),
    ({"filter": {}}, "action"),
    ({"action": "reset", "filter": {"colour": "red"}}, "colour"),
    ({"action": "reset", "filter": {"status": ["BOGUS"]}}, "status"),
    ({"action": "reset", "filter": {"kind": "precheck.nope"}}, "kind"),
    ({"action": "reset", "filter": {"older_than": "-1h"}}, "older_than"),
    ({"action": "reset", "filter": {"newer_than": "soon"}}, "newer_than"),
    ({"action": "reset", "filter": {"q": 5}}, "q"),
    ({"action": "reset", "filter": {"ids": ["precheck/zzz"]}}, "ids"),
    ({"action": "reset", "filter": ["FAILURE"]}, "filter"),
    ({"action": "reset", "filter": {}, "dry_run": "yes"}, "dry_run"),
    ({"action": "reset", "filter": {}, "force": 1}, "force"),
    ({"action": "reset", "filter": {}, "everything": True}, "everything"),
    ([1, 2], "body"),
    # No filter is never every process: a missing, null, false, 0, "", [] or empty filter is refused.
    ({"action": "cancel"}, "filter"),
    ({"action": "cancel", "filter": None}, "filter"),
    ({"action": "cancel", "filter": False}, "filter"),
    ({"action": "cancel", "filter": 0}, "filter"),
    ({"action": "cancel", "filter": ""}, "filter"),
    ({"action": "cancel", "filter": []}, "filter"),
    ({"action": "cancel", "filter": {}}, "filter"),
    ({"action": "cancel", "filter": {"ids": [], "status": ""}}, "filter"),
    ({"action": "cancel", "filter": {"all": False}}, "filter"),
    ({"action": "cancel", "filter": {"all": "yes"}}, "all"),
    ({"action": "cancel", "filter": {"all": True, "status": ["FAILURE"]}}, "all"),
    # Bounded input: a body nested too deep, text a server cannot take.
    ({"action": "cancel", "filter": {"status": [[[[[[[[["FAILURE"]]]]]]]]]}}, "body"),
    ({"action": "cancel", "filter": {"q": "\ud800"}}, "q"),
    ({"action": "cancel", "filter": {"kind": "\udced"}}, "kind"),
])
def test_bad_bulk_input_answers_400_naming_the_field_and_writes_nothing(client, body, parameter):
    seed(Entry, S.FAILURE)
    before = snapshot()
    response = post(client, body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["parameter"] == parameter
    assert snapshot() == before


def test_an_empty_filter_needs_all_true_and_then_acts_on_every_process(client):
    failed = [seed(Entry, S.FAILURE), seed(Precheck, S.FAILURE)]
    refused = post(client, {"action": "reset", "filter": {}})
    assert refused.status_code == 400 and refused.get_json()["parameter"] == "filter"
    assert 'send {"all": true}' in refused.get_json()["error"]
    body = post(client, {"action": "reset", "filter": {"all": True}}).get_json()
    assert body["changed"] == 2 and all(raw(type_, pk)["process_status"] == "READY"
                                        for type_, pk in zip((Entry, Precheck), failed))
    assert client.get("/api/bulk-actions").get_json()["items"][0]["filter"] == {"all": True}


def test_a_body_nested_beyond_the_recursion_limit_answers_400_not_500(client):
    for deep in ("[" * 100_000 + "]" * 100_000, '{"action": "reset", "filter": ' + '{"a": ' * 50_000 + "1"
                 + "}" * 50_001):
        response = client.post("/api/procs/bulk", data=deep, headers={**PAGE, "Content-Type": "application/json"})
        assert response.status_code == 400 and response.get_json()["parameter"] == "body"


@pytest.mark.parametrize("limit", ["²", "٣", "1_0", " 5", "5 ", "-1", "0", "201", "1e2", "9" * 40, "Infinity"])
def test_bulk_actions_limit_must_be_ascii_digits_in_range(client, limit):
    response = client.get("/api/bulk-actions", query_string={"limit": limit})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["parameter"] == "limit" and "from 1 to 200" in response.get_json()["error"]


def test_the_page_bulk_buttons_of_an_unfiltered_list_say_all_true(client):
    seed(Entry, S.FAILURE)
    page = client.get("/projects/admin/check-status/procs").get_data(as_text=True)
    assert """data-filter='{"all": true}'""" in page
    page = client.get("/projects/admin/check-status/procs?status=FAILURE").get_data(as_text=True)
    assert """data-filter='{"status": ["FAILURE"]}'""" in page


def test_a_body_that_is_not_json_answers_400(client):
    response = client.post("/api/procs/bulk", data="action=reset", headers=PAGE)
    assert response.status_code == 400 and response.get_json()["parameter"] == "body"


def test_bulk_posts_keep_the_cross_site_protection(secured):
    pk = seed(Entry, S.FAILURE)
    for headers in ({}, {"X-Proc-Request": "1", "Origin": "https://evil.example"},
                    {"X-Proc-Request": "1", "Sec-Fetch-Site": "cross-site"}):
        response = secured.post("/api/procs/bulk", json={"action": "reset", "filter": {}},
                                headers={**basic(), **headers})
        assert response.status_code == 403
    assert raw(Entry, pk)["process_status"] == "FAILURE" and bulk_records() == []


# -- procctl admin, the filter form ----------------------------------------------------------------


@pytest.fixture
def operator(monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "operator7")
    return CliRunner()


def test_procctl_bulk_shows_the_dry_run_and_asks_before_acting(operator):
    failed = [seed(Entry, S.FAILURE, errors=["cannot parse"], age=7200) for _ in range(3)]
    seed(Entry, S.FAILURE, age=5)  # newer than the filter
    result = operator.invoke(cli, ["admin", "redispatch", "--status", "FAILURE", "--older-than", "1h"], input="n\n")
    assert result.exit_code == 1
    assert "redispatch: 3 matching, 3 would change" in result.output and "redispatch 3 process(es)?" in result.output
    assert all(raw(Entry, pk)["attempt"] == 1 for pk in failed)
    result = operator.invoke(cli, ["admin", "redispatch", "--status", "FAILURE", "--older-than", "1h", "-q", "PARSE"],
                             input="y\n")
    assert result.exit_code == 0, result.output
    assert "redispatch: 3 changed, 0 skipped (by cli:operator7)" in result.output
    assert all(raw(Entry, pk)["attempt"] == 2 for pk in failed)


def test_procctl_bulk_dry_run_writes_nothing_and_yes_does_not_ask(operator):
    pk = seed(Precheck, S.RUNNING, age=5)
    result = operator.invoke(cli, ["admin", "cancel", "--kind", "precheck", "--dry-run"])
    assert result.exit_code == 0 and "cancel: 1 matching, 1 would change" in result.output
    assert raw(Precheck, pk)["process_status"] == "RUNNING"
    result = operator.invoke(cli, ["admin", "reset", "--status", "RUNNING", "--yes"])
    assert result.exit_code == 0 and "0 would change" in result.output and "healthy" in result.output
    result = operator.invoke(cli, ["admin", "reset", "--status", "RUNNING", "--force", "--yes"])
    assert "reset: 1 changed" in result.output
    assert raw(Precheck, pk)["history"][-1]["by"] == "cli:operator7"


@pytest.mark.parametrize("args, says", [
    (["reset", "precheck", "0123456789abcdef01234567", "--status", "FAILURE"], "not both"),
    (["reset"], "give COLLECTION ID"),
    (["reset", "--dry-run"], "--dry-run goes with filter options"),
    (["reset", "--status", "BOGUS"], "unknown status"),
    (["cancel", "--kind", "nope"], "known kinds"),
    (["redispatch", "--older-than", "-5m"], "--older-than"),
    (["redispatch", "--newer-than", "5x"], "90s, 15m, 1h, 2d"),
    (["cancel", "--all", "--status", "FAILURE"], "goes alone"),
    (["cancel", "-q", ""], "give COLLECTION ID"),
    (["cancel", "-q", "\udced\udca0\udc80"], "not valid text"),
])
def test_procctl_bad_bulk_input_exits_2_writing_nothing(operator, args, says):
    seed(Entry, S.FAILURE)
    before = snapshot()
    result = operator.invoke(cli, ["admin", *args, "--yes"] if "--dry-run" not in args else ["admin", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert snapshot() == before


def test_procctl_all_acts_on_every_process_like_all_true(operator):
    failed = [seed(Entry, S.FAILURE), seed(Precheck, S.FAILURE)]
    result = operator.invoke(cli, ["admin", "reset", "--all", "--yes"])
    assert result.exit_code == 0 and "reset: 2 changed" in result.output, result.output
    assert raw(Entry, failed[0])["process_status"] == raw(Precheck, failed[1])["process_status"] == "READY"


def test_procctl_bulk_over_the_limit_exits_2(operator):
    config.configure(bulk_limit=2)
    for _ in range(3):
        seed(Entry, S.FAILURE)
    result = operator.invoke(cli, ["admin", "reset", "--status", "FAILURE", "--yes"])
    assert result.exit_code == 2 and "PROC_BULK_LIMIT=2" in result.output


def test_transition_each_writes_what_transition_would_and_skips_a_stale_attempt():
    from proc import machine
    from proc.machine import many
    from proc.machine import Attempt, Change

    fresh, stale = seed(Entry, S.FAILURE), seed(Entry, S.FAILURE)
    heard = []
    machine.listeners.append(heard.append)
    items = [(Attempt("entry", fresh, 1), Change(fields={"celery_task_id": "new-1"}, note="n", by="me")),
             (Attempt("entry", stale, 0), Change(fields={"celery_task_id": "new-2"}, note="n", by="me"))]
    landed = many.transition_each("entry", items, "redispatch")
    assert [a["_id"] for a in landed] == [fresh] and landed[0]["attempt"] == 2
    after = raw(Entry, fresh)
    assert (after["process_status"], after["attempt"], after["celery_task_id"]) == ("PENDING", 2, "new-1")
    assert after["history"][-1] | {"time": None} == {"status": "PENDING", "event": "redispatch", "time": None,
                                                     "attempt": 2, "note": "n", "by": "me"}
    assert raw(Entry, stale)["process_status"] == "FAILURE"
    assert [(t.id, t.target.value) for t in heard] == [(fresh, "PENDING")]


@pytest.mark.real_server
def test_procctl_bulk_commands_as_documented_in_a_process_of_their_own(database_uri, redis_url):
    """The forms docs/api.md gives, run as ``procctl`` processes against this test's database."""
    import os
    import subprocess

    from support import PROJECT_DIR, venv_bin

    old = [seed(Entry, S.FAILURE, age=7200) for _ in range(2)]
    young = seed(Entry, S.FAILURE, age=60)
    env = {**os.environ, "MONGODB_URI": database_uri, "CELERY_BROKER_URL": redis_url}

    def procctl(*args, stdin=None):
        return subprocess.run([venv_bin("procctl"), "admin", *args], env=env, cwd=PROJECT_DIR, input=stdin,
                              capture_output=True, text=True, timeout=120)

    dry = procctl("redispatch", "--status", "FAILURE", "--kind", "entry", "--older-than", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "redispatch: 2 matching, 2 would change" in dry.stdout
    asked = procctl("redispatch", "--status", "FAILURE", "--kind", "entry", "--older-than", "1h", stdin="n\n")
    assert asked.returncode == 1 and "redispatch 2 process(es)?" in asked.stdout
    assert all(raw(Entry, pk)["attempt"] == 1 for pk in old)
    done = procctl("redispatch", "--status", "FAILURE", "--kind", "entry", "--older-than", "1h", stdin="y\n")
    assert done.returncode == 0 and "redispatch: 2 changed, 0 skipped" in done.stdout, done.stdout + done.stderr
    assert all(raw(Entry, pk)["attempt"] == 2 for pk in old) and raw(Entry, young)["attempt"] == 1
    both = procctl("cancel", "entry", str(young), "--kind", "entry")
    assert both.returncode == 2 and "not both" in both.stderr
    nothing = procctl("cancel", "--yes")
    assert nothing.returncode == 2 and "--all for every process" in nothing.stderr
    everything = procctl("reset", "--all", "--dry-run")  # as docs/api.md gives it
    assert everything.returncode == 0 and "reset: 3 matching" in everything.stdout, everything.stderr
    # Bytes that are not UTF-8 on the command line (a lone surrogate for Python) never reach the server.
    undecodable = subprocess.run([venv_bin("procctl"), "admin", "cancel", "-q", b"\xed\xa0\x80", "--yes"],
                                 env=env, cwd=PROJECT_DIR, capture_output=True, timeout=120)
    assert undecodable.returncode == 2 and b"Traceback" not in undecodable.stderr
    assert b"-q" in undecodable.stderr and b"not valid text" in undecodable.stderr


def test_bulk_cancel_gives_back_the_slots_of_a_limited_kind_in_one_write(client):
    from proc.run import limits
    from proc.machine import Attempt

    running = [seed(Precheck, S.RUNNING, age=5) for _ in range(3)]
    for pk in running:
        assert limits.acquire("precheck.run", Attempt.of("precheck", raw(Precheck, pk)).key, 4) is limits.Slot.ACQUIRED
    body = post(client, {"action": "cancel", "filter": {"kind": "precheck.run", "status": "RUNNING"}}).get_json()
    assert body["changed"] == 3
    assert limits.holders("precheck.run") == []
