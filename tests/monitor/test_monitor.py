"""The monitor's decisions, one at a time: detection queries, per-process checks, the
recovery policy table, countdown caps and the beat schedule.

Messages go to a private redis-server that no worker consumes, so every state a test
sees is the one the monitor wrote. Time is moved forward by passing ``now``.
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from support import make_test_app
from fault_models import Stall
from proc import KindSettings, config, monitor, names, registry
from proc.exceptions import ConfigurationError
from proc.monitor import recovery, stuck
from proc.run import checks, limits, messaging
from proc.machine import Attempt
from proc.status import NOT_STARTED, REASONS, RECOVERY, ProcessStatus as S
from proc.timeutil import utcnow

LATER = timedelta(seconds=3)  # past every FAST threshold (queue 1 s, heartbeat 1 s, expected 2 s)


pytestmark = pytest.mark.usefixtures("idle_app")


def put(method: str, status: str, *, attempt: int = 1, age: float = 0.0, **fields) -> dict:
    """A Stall document in ``status`` (fabricated for the test), ``age`` seconds in it."""
    doc = Stall(label=f"{method}-{status}")
    doc.save()
    now = utcnow()
    since = now - timedelta(seconds=age)
    state = {"process_status": status, "attempt": attempt, "current_process": method,
             "last_status_change": since, "celery_task_id": f"task-{doc.pk}",
             "process_args": {"args": [], "kwargs": {}},
             "history": [{"status": "PENDING", "event": "request", "attempt": attempt, "time": since}]}
    if status in ("RUNNING", "WAITING_FOR_RESULT", "DISPATCHED"):
        state["deadline"] = since + timedelta(seconds=2)
    if status == "RUNNING":
        state.update(heartbeat=now, worker_hostname="w1@test")
    state.update(fields)
    coll = Stall._get_collection()
    coll.update_one({"_id": doc.pk}, {"$set": state})
    return coll.find_one({"_id": doc.pk})


def reread(raw: dict) -> dict:
    return Stall._get_collection().find_one({"_id": raw["_id"]})


def found(now=None) -> dict:
    return {s.id: s for s in stuck.find(now or utcnow() + LATER, collections=["fault_stall"])}


# -- detection -----------------------------------------------------------------------------------


def test_find_issues_indexed_queries_that_return_only_stuck_processes():
    healthy = [put("work_fail", "RUNNING"), put("work_fail", "DISPATCHED"), put("work_fail", "PENDING"),
               put("work_fail", "SUCCESS"), put("work_fail", "READY")]
    now = utcnow()
    old = now - timedelta(seconds=30)
    lost = put("work_fail", "RUNNING", heartbeat=old, deadline=now + timedelta(hours=1))
    late = put("work_fail", "RUNNING", deadline=now - timedelta(seconds=5))
    unsent = put("work_fail", "DISPATCHED", last_status_change=old, deadline=now + timedelta(hours=1))
    pending = put("work_fail", "PENDING", last_status_change=old)
    refused = put("work_fail", "PENDING", age=1, current_process_step="broker unreachable at redis://b:6379/0 (x)")
    explain: list = []
    result = stuck.find(now, collections=["fault_stall"], explain=explain)
    reasons = {s.id: s.reason for s in result}
    assert reasons == {lost["_id"]: stuck.HEARTBEAT_LOST, late["_id"]: stuck.OVERRAN,
                       unsent["_id"]: stuck.NOT_STARTED, pending["_id"]: stuck.NOT_SENT,
                       refused["_id"]: stuck.BROKER_UNREACHABLE}  # at any age: the broker refused it
    assert not set(reasons) & {h["_id"] for h in healthy}
    assert [(e["filter"]["process_status"], e["index"], e["returned"]) for e in explain] == [
        ("PENDING", ("process_status", "last_status_change"), 1),  # broker refused it: at any age
        ("PENDING", ("process_status", "last_status_change"), 1),
        ("DISPATCHED", ("process_status", "last_status_change"), 1),
        ("RUNNING", ("process_status", "heartbeat"), 1),
        ("DISPATCHED", ("process_status", "deadline"), 0),
        ("RUNNING", ("process_status", "deadline"), 1),
        ("WAITING_FOR_RESULT", ("process_status", "deadline"), 0),
    ]  # one status per query: an equality and a range, which every server serves from the index


def test_kinds_with_different_thresholds_get_one_query_per_threshold():
    config.configure(kind_settings={"fault_stall.work_fail": {"queue_timeout": 30}})
    registry.forget_settings()
    kinds = [k for k in registry.kinds() if k.collection == "fault_stall"]
    now = utcnow()
    queries = stuck.queries_for(kinds, now)
    refused, *queue = [q for q in queries if "last_status_change" in q]
    assert refused == {"process_status": "PENDING", "last_status_change": {"$lt": now},
                       "current_process_step": {"$regex": "^broker unreachable"}}  # one, whatever the timeouts
    assert [q["process_status"] for q in queue] == ["PENDING", "DISPATCHED"] * 2
    assert queue[2]["current_process"] == queue[3]["current_process"] == {"$in": ["work_fail"]}
    assert queue[3]["last_status_change"] == {"$lt": now - timedelta(seconds=30)}
    assert sorted(queue[0]["current_process"]["$in"]) == ["work_alert", "work_limited", "work_retry"]
    [beat] = [q for q in queries if "heartbeat" in q]
    assert "current_process" not in beat
    # A fail-kind process 10 s in DISPATCHED is not stuck yet; a retry-kind one is.
    slow = put("work_fail", "DISPATCHED", age=10, deadline=now + timedelta(hours=1))
    quick = put("work_retry", "DISPATCHED", age=10, deadline=now + timedelta(hours=1))
    assert set(found(now)) == {quick["_id"]}
    assert slow["_id"] not in found(now)


def test_a_lost_join_is_found_at_the_parents_deadline():
    from fault_models import FaultChild, FaultParent

    parent = FaultParent(n=1)
    parent.save()
    since = utcnow()
    coll = FaultParent._get_collection()
    coll.update_one({"_id": parent.pk}, {"$set": {
        "process_status": "WAITING_FOR_RESULT", "attempt": 1, "current_process": "fan_out",
        "last_status_change": since, "deadline": since + timedelta(seconds=2),
        "child_collections": ["fault_child"]}})
    child = FaultChild(group=str(parent.pk))
    child.save()
    FaultChild._get_collection().update_one({"_id": child.pk}, {"$set": {
        "process_status": "SUCCESS", "parent": {"collection": "fault_parent", "id": parent.pk, "attempt": 1},
        "parent_key": f"fault_parent/{{\"$oid\": \"{parent.pk}\"}}/1"}})
    assert stuck.find(since + timedelta(seconds=1), collections=["fault_parent"]) == []
    [item] = stuck.find(since + LATER, collections=["fault_parent"])
    assert item.reason == stuck.JOIN_LOST


# -- the per-process check -------------------------------------------------------------------------


def test_a_check_leaves_finished_and_replaced_processes_alone():
    done = put("work_fail", "SUCCESS")
    replaced = put("work_fail", "RUNNING", attempt=2)
    assert monitor.check("fault_stall", done["_id"], 1, now=utcnow() + LATER).action == monitor.Action.NOTHING
    assert monitor.check("fault_stall", replaced["_id"], 1, now=utcnow() + LATER).action == monitor.Action.NOTHING
    assert reread(done)["process_status"] == "SUCCESS" and reread(replaced)["attempt"] == 2


def test_a_check_before_the_deadline_waits_for_it_and_a_long_one_is_capped(idle_app):
    far = put("work_fail", "RUNNING", deadline=utcnow() + timedelta(hours=5))
    outcome = monitor.check("fault_stall", far["_id"], 1)
    assert outcome.action == monitor.Action.RESCHEDULED
    # Capped at half the visibility timeout, else Redis would deliver the check twice.
    assert outcome.next_check == messaging.max_countdown(idle_app) == config.get().visibility_timeout / 2
    near = put("work_fail", "RUNNING", deadline=utcnow() + timedelta(seconds=30))
    assert 28 <= monitor.check("fault_stall", near["_id"], 1).next_check <= 30


def test_the_countdown_cap_follows_the_apps_visibility_timeout(private_redis):
    app = make_test_app(private_redis.url)
    app.conf.broker_transport_options = dict(app.conf.broker_transport_options, visibility_timeout=10)
    raw = put("work_fail", "RUNNING", deadline=utcnow() + timedelta(hours=1))
    assert checks.schedule_check(registry.kind(Stall, "work_fail"), raw, app=app) == 5
    app.close()


# -- the recovery policies ---------------------------------------------------------------------------


def test_the_recovery_table_names_an_action_for_every_reason_under_every_policy():
    assert set(RECOVERY) == {"fail", "retry", "alert"}
    for policy, row in RECOVERY.items():
        assert set(row) == set(REASONS), policy
        assert set(row.values()) <= set(recovery.ACTIONS), policy
    with pytest.raises(ConfigurationError, match="recovery must be one of fail, retry, alert, got 'later'"):
        KindSettings(recovery="later")


def test_a_new_recovery_policy_is_one_row_of_the_table(monkeypatch):
    # "patient": alert about everything, except that a message no worker started is sent again.
    monkeypatch.setitem(RECOVERY, "patient", {**RECOVERY["alert"], NOT_STARTED: "retry"})
    config.configure(kind_settings={"fault_stall.work_fail": {"recovery": "patient"}})
    later = utcnow() + LATER
    dispatched = put("work_fail", "DISPATCHED")
    running = put("work_fail", "RUNNING", heartbeat=later - timedelta(days=1))
    assert monitor.check("fault_stall", dispatched["_id"], 1, now=later).action == monitor.Action.RETRIED
    assert monitor.check("fault_stall", running["_id"], 1, now=later).action == monitor.Action.ALERTED
    assert (reread(dispatched)["process_status"], reread(dispatched)["attempt"]) == ("DISPATCHED", 2)
    assert reread(running)["process_status"] == "RUNNING"


STALE, FRESH, NONE = "stale heartbeat", "fresh heartbeat", "-"


@pytest.mark.parametrize("method, status, beat, action, final, attempt, message", [
    ("work_fail", "RUNNING", STALE, monitor.Action.FAILED, "FAILURE", 1, "error: worker heartbeat lost after"),
    ("work_retry", "RUNNING", STALE, monitor.Action.RETRIED, "DISPATCHED", 2, "warning: monitor: worker heartbeat lost"),
    ("work_alert", "RUNNING", STALE, monitor.Action.ALERTED, "RUNNING", 1,
     f"warning: monitor (attempt 1): {stuck.HEARTBEAT_LOST}: worker heartbeat lost"),
    ("work_fail", "RUNNING", FRESH, monitor.Action.FAILED, "FAILURE", 1, "error: running past its expected duration"),
    ("work_retry", "RUNNING", FRESH, monitor.Action.FAILED, "FAILURE", 1, "error: running past"),
    ("work_alert", "RUNNING", FRESH, monitor.Action.ALERTED, "RUNNING", 1, f"warning: monitor (attempt 1): {stuck.OVERRAN}"),
    ("work_fail", "DISPATCHED", NONE, monitor.Action.FAILED, "FAILURE", 1, "error: DISPATCHED for "),
    ("work_retry", "DISPATCHED", NONE, monitor.Action.RETRIED, "DISPATCHED", 2, "warning: monitor: DISPATCHED for "),
    ("work_alert", "DISPATCHED", NONE, monitor.Action.ALERTED, "DISPATCHED", 1, "warning: monitor (attempt 1): not started"),
    ("work_fail", "PENDING", NONE, monitor.Action.RESENT, "DISPATCHED", 1, "warning: monitor: PENDING for "),
    ("work_alert", "PENDING", NONE, monitor.Action.RESENT, "DISPATCHED", 1, "warning: monitor: PENDING for "),
])
def test_recovery_by_reason_and_policy(method, status, beat, action, final, attempt, message):
    later = utcnow() + LATER
    fields = {STALE: {"heartbeat": later - timedelta(days=1)}, FRESH: {"heartbeat": later}, NONE: {}}[beat]
    raw = put(method, status, **fields)
    outcome = monitor.check("fault_stall", raw["_id"], 1, now=later)
    assert outcome.action == action
    after = reread(raw)
    assert (after["process_status"], after["attempt"]) == (final, attempt)
    kind, text = message.split(": ", 1)
    assert any(m.startswith(text) for m in after[kind + "s"]), after[kind + "s"]
    if action in (monitor.Action.FAILED, monitor.Action.RETRIED):
        mine = [h for h in after["history"] if h.get("by") == recovery.BY]
        assert len(mine) == 1 and mine[0]["note"] == f"monitor: {outcome.reason}"
    [record] = recovery.recent_recoveries()
    assert (record["id"], record["action"], record["reason"]) == (raw["_id"], action, outcome.reason)


def test_retry_gives_up_after_max_attempts():
    raw = put("work_retry", "RUNNING", heartbeat=utcnow() - timedelta(days=1),
              history=[{"event": "request", "attempt": 1}, {"event": "claim", "attempt": 1},
                       {"event": "redispatch", "attempt": 2}, {"event": "claim", "attempt": 2}],
              attempt=2)
    assert recovery.attempts_of_call(raw) == 2
    outcome = monitor.check("fault_stall", raw["_id"], 2, now=utcnow() + LATER)
    assert outcome.action == monitor.Action.FAILED
    after = reread(raw)
    assert after["process_status"] == "FAILURE" and after["attempt"] == 2
    assert after["errors"][-1].endswith("gave up after 2 attempt(s) (max_attempts=2)")


def test_an_alert_is_written_once_per_attempt_and_reason():
    later = utcnow() + LATER
    raw = put("work_alert", "RUNNING", deadline=utcnow() - timedelta(seconds=1), heartbeat=later)
    outcomes = [monitor.check("fault_stall", raw["_id"], 1, now=later) for _ in range(3)]
    assert [o.action for o in outcomes] == [monitor.Action.ALERTED, monitor.Action.ALREADY_ALERTED, monitor.Action.ALREADY_ALERTED]
    assert all(o.next_check is not None for o in outcomes)  # checked again later
    assert len(reread(raw)["warnings"]) == 1 and len(recovery.recent_recoveries()) == 1


def test_a_heartbeat_that_comes_back_before_the_recovery_cancels_it():
    raw = put("work_fail", "RUNNING", heartbeat=utcnow() - timedelta(days=1))
    [item] = found().values()
    Stall._get_collection().update_one({"_id": raw["_id"]}, {"$set": {"heartbeat": utcnow()}})
    outcome = recovery.recover(item)
    assert outcome.action == monitor.Action.LOST_RACE
    assert reread(raw)["process_status"] == "RUNNING" and reread(raw)["errors"] == []


def test_a_process_that_changed_since_it_was_found_is_left_alone():
    raw = put("work_fail", "DISPATCHED", age=30)
    [item] = found().values()
    Stall._get_collection().update_one({"_id": raw["_id"]}, {"$set": {"process_status": "RUNNING"}})
    assert recovery.recover(item).action == monitor.Action.LOST_RACE
    assert reread(raw)["errors"] == []


def test_the_sweep_sends_held_processes_of_a_limited_kind_when_a_slot_is_free():
    held = put("work_limited", "PENDING", current_process_step="waiting for a slot: 1/1 in use")
    assert limits.holders("fault_stall.work_limited") == []  # the slot was freed, the pump was lost
    report = monitor.sweep(collections=["fault_stall"])
    assert report.pumped == {"fault_stall.work_limited": 1}
    after = reread(held)
    assert after["process_status"] == "DISPATCHED" and after["current_process_step"] is None
    assert "sent 1 held PENDING process(es) of fault_stall.work_limited" in report.lines()


def test_sweep_report_names_each_process_with_its_reason_and_action():
    raw = put("work_fail", "RUNNING", heartbeat=utcnow() - timedelta(days=1))
    report = monitor.sweep(now=utcnow() + LATER, collections=["fault_stall"])
    [line, summary] = report.lines()
    assert line.startswith(f"fault_stall/{raw['_id']} fault_stall.work_fail RUNNING (attempt 1): "
                           f"{stuck.HEARTBEAT_LOST}: worker heartbeat lost after ")
    assert line.endswith("on host w1@test -> failed")
    assert "7 queries, 1 stuck, 1 recovered" in summary  # one status per query, and the broker-refused one


# -- wiring -------------------------------------------------------------------------------------------


def test_dispatch_schedules_the_check_at_the_deadline(monkeypatch):
    scheduled = []
    monkeypatch.setattr(checks, "schedule_bucket", lambda kind, deadline, **k: scheduled.append(deadline))
    job = Stall(label="wired")
    job.save()
    job.work_fail()
    [deadline] = scheduled
    assert deadline == job.reload_status().deadline
    assert 1.9 <= (job.deadline - job.history[-1]["time"]).total_seconds() <= 2.1


def test_beat_runs_the_sweep_every_interval_and_drops_missed_ones():
    app = messaging.make_app()
    entry = app.conf.beat_schedule["proc-monitor-sweep"]
    assert entry["task"] == names.SWEEP_TASK
    assert entry["schedule"] == monitor.DEFAULT_SWEEP_INTERVAL == entry["options"]["expires"]
    assert entry["options"]["queue"] == messaging.MONITOR_QUEUE
    assert {q.name for q in app.conf.task_queues} == {"celery", messaging.MONITOR_QUEUE}
    import proc.tasks  # noqa: F401  (registers the tasks)

    assert {names.CHECK_TASK, names.SWEEP_TASK} <= set(app.tasks.keys())
    app.close()


def test_states_the_monitor_treats_as_active_are_exactly_the_processing_ones():
    assert set(S) - {S.READY, S.SUCCESS, S.FAILURE} == {S.PENDING, S.DISPATCHED, S.RUNNING,
                                                         S.WAITING_FOR_RESULT}


def test_a_pending_process_whose_dispatcher_died_holding_its_slot_is_sent():
    """The caller took the kind's only slot, then died before publishing: past the queue
    timeout the sweep sends the process itself instead of waiting for that slot forever."""

    raw = put("work_limited", "PENDING", age=5)
    kind = registry.kind_named("fault_stall.work_limited")
    key = Attempt(kind.collection, raw["_id"], raw["attempt"]).key
    assert limits.acquire(kind.name, key, kind.settings.limit) is limits.Slot.ACQUIRED
    monitor.sweep()
    after = Stall._get_collection().find_one({"_id": raw["_id"]})
    assert after["process_status"] == S.DISPATCHED.value and after["attempt"] == raw["attempt"]
    assert limits.holders(kind.name) == [key]


# -- deadline buckets ---------------------------------------------------------------------------------


def test_processes_whose_deadlines_share_a_bucket_cost_one_check_message(idle_app, monkeypatch):
    sent = []
    original = idle_app.send_task
    monkeypatch.setattr(idle_app, "send_task", lambda name, *a, **k: (sent.append(name), original(name, *a, **k))[1])
    config.configure(check_bucket=60)
    jobs = [Stall(label=f"b{i}") for i in range(20)]
    for job in jobs:
        job.save()
        job.work_fail()
    assert sent.count("proc.run") == 20
    assert sent.count("proc.monitor_bucket") in (1, 2)  # 2 only if the 20 deadlines straddle a bucket edge
    assert "proc.monitor_check" not in sent
    assert checks.BUCKETS in monitor.db.database().list_collection_names()


def test_a_bucket_check_checks_every_process_due_in_it_and_drops_its_claim():
    kind = registry.kind(Stall, "work_fail")
    config.configure(check_bucket=10)
    stuck_one = put("work_fail", "DISPATCHED", age=5)  # deadline 3 s ago: not started by any worker
    other = put("work_fail", "DISPATCHED", age=0, deadline=utcnow() + timedelta(hours=1))
    start, end = checks.bucket_of(stuck_one["deadline"], 10)
    assert checks.schedule_bucket(kind, stuck_one["deadline"]) is True
    assert checks.schedule_bucket(kind, stuck_one["deadline"]) is False  # claimed once
    outcomes = monitor.check_bucket(kind.name, start, end, now=end + timedelta(seconds=1))
    assert [(o.reason, o.action) for o in outcomes] == [(stuck.NOT_STARTED, monitor.Action.FAILED)]
    assert Stall._get_collection().find_one({"_id": stuck_one["_id"]})["process_status"] == "FAILURE"
    assert Stall._get_collection().find_one({"_id": other["_id"]})["process_status"] == "DISPATCHED"
    assert monitor.db.database()[checks.BUCKETS].count_documents({}) == 0


def test_a_bucket_check_that_fires_early_sends_itself_again(idle_app, monkeypatch):
    sent = []
    monkeypatch.setattr(idle_app, "send_task", lambda name, *a, **k: sent.append((name, k.get("countdown"))))
    start, end = checks.bucket_of(utcnow() + timedelta(hours=5), 10)
    assert monitor.check_bucket("fault_stall.work_fail", start, end) == []
    [(name, countdown)] = sent
    assert name == "proc.monitor_bucket" and countdown == messaging.max_countdown(idle_app)
