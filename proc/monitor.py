"""The monitor: nothing stays PENDING, DISPATCHED, RUNNING or WAITING_FOR_RESULT forever.

Celery alone loses track of work (a worker killed mid-task, a message lost with the
broker, a join that never ran). Two mechanisms catch it, both built on the same
detection as the check-status page (``proc.stuck.diagnose``):

- **Deadline checks** (Celery task ``proc.monitor_bucket``): when a process is DISPATCHED,
  its deadline (dispatch time + expected duration) falls in a bucket of
  ``PROC_CHECK_BUCKET`` seconds; one message per kind and bucket fires at the bucket's end
  and checks each of its processes (``check_bucket``). The per-process check (task
  ``proc.monitor_check``) is what each of them gets, and what is sent again for a process
  that needs another look later. When it runs:
  a finished process, or one a newer attempt replaced, is left alone; a process that is
  still alive (fresh heartbeat, children still running, or simply not yet due) is checked
  again later; a stuck one gets its kind's recovery policy. Nothing is revoked when a
  process finishes: every check starts by
  re-reading the document, and every recovery is a conditional state-machine write, so a
  duplicate, late or unrevoked check is harmless.
- **Sweep** (``sweep()``; Celery beat task ``proc.monitor_sweep``; ``procctl monitor``): a
  backstop for checks lost with the broker. It sends held PENDING processes of limited
  kinds while slots are free, finds stuck processes with indexed queries
  (``proc.stuck.find``) and recovers each.

Recovery (``recover``), per reason and the kind's ``recovery`` policy:

=======================  ==========================  ==========================  ====================
reason                   fail                        retry                       alert
=======================  ==========================  ==========================  ====================
PENDING held by limit    send when a slot frees      send when a slot frees      send when a slot frees
PENDING not sent /       send again (same attempt)   send again (same attempt)   send again (same attempt)
broker unreachable
DISPATCHED not started   FAILURE                     new attempt (max_attempts)  warning only
RUNNING heartbeat lost   FAILURE                     new attempt (max_attempts)  warning only
RUNNING overran          FAILURE                     FAILURE (*)                 warning, left alone
WAITING join lost        run the join once           run the join once           run the join once
WAITING children overran FAILURE                     FAILURE (*)                 warning, left alone
=======================  ==========================  ==========================  ====================

(*) the work is still running (fresh heartbeat, or live children): a new attempt would
run it twice at once, so "retry" fails it instead and says so. "retry" past
``max_attempts`` fails. Nothing has run for a PENDING process (the broker was down, or the
caller died before publishing), so it is sent again under every policy, as soon as the
broker takes it; a second copy of the message is harmless. A lost join is normal work that was not
delivered, so it runs whatever the policy (the WAITING -> RUNNING flip lets one caller
win).

Every recovery is one conditional transition (``by="monitor"``) that also writes the
reason to ``errors`` or ``warnings`` and to ``history``; it is logged and recorded in
``proc_recoveries`` (for the check-status page). A late write of the superseded attempt
(its worker was only slow, or is released later) finds another attempt and changes
nothing.

Countdowns and the Redis visibility timeout: Redis hands a message with a countdown to a
worker at once, and the worker holds it unacknowledged until it is due; if that takes
longer than the broker's ``visibility_timeout`` Redis delivers it again to another worker
(early redelivery: two copies). Every countdown this module schedules is therefore capped
at half the visibility timeout (``messaging.max_countdown``); a check that fires before
the process is due simply schedules itself again.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from . import db, dispatch, execution, limits, machine, messaging, moved, recoveries, registry, stuck
from .exceptions import BrokerUnavailable, UnknownKind
from .machine import Attempt, Change
from .names import CHECK_TASK, SWEEP_TASK  # noqa: F401  (the monitor's task names, defined in proc.names)
from .recoveries import RECOVERIES, RECOVERY_RECORD_TTL, ensure_indexes, recent_recoveries  # noqa: F401
from .status import PROCESSING_VALUES, ProcessStatus as S
from .timeutil import utcnow

log = logging.getLogger(__name__)

#: Seconds between two sweeps by default (``PROC_SWEEP_INTERVAL`` sets it).
DEFAULT_SWEEP_INTERVAL = 60.0


BY = "monitor"


class Action(str, Enum):
    """What a check, a recovery or a sweep did to one process (stored as the value)."""

    NOTHING = "nothing"
    RESCHEDULED = "rescheduled"
    FAILED = "failed"
    RETRIED = "retried"
    RESENT = "sent again"
    STILL_PENDING = "still pending"
    ALERTED = "alerted"
    ALREADY_ALERTED = "already reported"
    JOINED = "join run"
    WAITS = "waits for a slot"
    LOST_RACE = "changed meanwhile"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


# The actions under their former module-level names (tests and callers use both).
NOTHING, RESCHEDULED, FAILED, RETRIED = Action.NOTHING, Action.RESCHEDULED, Action.FAILED, Action.RETRIED
RESENT, STILL_PENDING, ALERTED, ALREADY_ALERTED = (Action.RESENT, Action.STILL_PENDING, Action.ALERTED,
                                                   Action.ALREADY_ALERTED)
JOINED, WAITS, LOST_RACE = Action.JOINED, Action.WAITS, Action.LOST_RACE

#: The actions that changed the process (the rest report it only).
RECOVERED = frozenset({FAILED, RETRIED, RESENT, JOINED})
#: The actions after which a per-process check looks again later.
LOOK_AGAIN = frozenset({RESCHEDULED, ALERTED, ALREADY_ALERTED, STILL_PENDING, WAITS, LOST_RACE})


# -- one check ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one check or recovery did."""

    action: Action
    reason: str | None = None
    detail: str = ""
    next_check: float | None = None
    """Seconds until the next check of this process, when one is due."""
    stuck: stuck.Stuck | None = field(default=None, repr=False)

    @property
    def recovered(self) -> bool:
        return self.action in RECOVERED


def _load(collection: str, id) -> tuple[registry.Kind | None, dict | None]:
    try:
        cls = registry.class_for(collection)
    except UnknownKind:
        log.error("monitor: no Proc subclass for collection %r; check dropped", collection)
        return None, None
    raw = cls._get_collection().find_one({"_id": id})
    return registry.kind_of(cls, raw), raw


def check(collection: str, id, attempt: int, *, now: datetime | None = None, app=None) -> Outcome:
    """The per-process check of one attempt: leave, reschedule or recover (see module doc).

    Reschedules itself through ``app`` (default: ``messaging.get_app()``) when the process
    needs another look; ``Outcome.next_check`` says when.
    """
    kind, raw = _load(collection, id)
    if kind is None or raw is None or raw.get("attempt") != attempt \
            or raw.get("process_status") not in PROCESSING_VALUES:
        return Outcome(NOTHING, detail="finished, replaced by a newer attempt, or gone")
    now = now or utcnow()
    verdict = stuck.diagnose(kind, raw, now, limits.usage())
    if verdict is None:
        outcome = Outcome(RESCHEDULED, detail="alive")
    else:
        outcome = recover(stuck.Stuck(kind, raw, *verdict), now=now)
    if outcome.action in LOOK_AGAIN:
        when = _next_check(kind, raw, now)
        countdown = messaging.schedule_check(kind, raw, when, app=app)
        outcome.next_check = countdown
    return outcome


def check_bucket(kind_name: str, start: datetime, end: datetime, *, now: datetime | None = None,
                 app=None) -> list[Outcome]:
    """The check of one deadline bucket: every active process of the kind whose deadline is
    in ``[start, end)`` gets the per-process check (one query on (process_status, deadline)).
    A bucket message that fires early (its countdown was capped) sends itself again."""
    now = now or utcnow()
    if now < end:
        messaging.send_bucket(kind_name, start, end, app=app)
        return []
    try:
        kind = registry.kind_named(kind_name)
    except UnknownKind:
        log.error("monitor: no process kind %r; bucket check dropped", kind_name)
        return []
    coll = kind.cls._get_collection()
    query = {"process_status": {"$in": [S.DISPATCHED.value, S.RUNNING.value, S.WAITING_FOR_RESULT.value]},
             "deadline": {"$gte": start, "$lt": end}, "current_process": kind.method}
    outcomes = [check(kind.collection, raw["_id"], raw["attempt"], now=now, app=app)
                for raw in coll.find(query, {"attempt": 1})]
    messaging.forget_bucket(kind_name, start)
    return outcomes


def _next_check(kind, raw: dict, now: datetime) -> datetime:
    """Before the deadline: at the deadline. After it (still alive): one interval from now."""
    deadline = raw.get("deadline")
    if deadline is not None and deadline > now:
        return deadline
    return now + timedelta(seconds=kind.settings.monitor_interval)


# -- recovery -----------------------------------------------------------------------------


def attempts_of_call(raw: dict) -> int:
    """Attempts of the current call: 1 + the redispatches since the last ``request``."""
    count = 1
    for entry in reversed(raw.get("history") or []):
        if entry.get("event") == "request":
            break
        if entry.get("event") == "redispatch":
            count += 1
    return count


def recover(item: stuck.Stuck, *, now: datetime | None = None) -> Outcome:
    """Apply the kind's recovery policy to one stuck process (see the module's table)."""
    now = now or utcnow()
    kind, reason = item.kind, item.reason
    # Act on the whole document at the attempt and state it was judged in, if still stuck.
    raw = kind.cls._get_collection().find_one(
        {"_id": item.id, "attempt": item.attempt, "process_status": item.status})
    verdict = None if raw is None else stuck.diagnose(kind, raw, now, limits.usage())
    if verdict is None:
        return _done(item, Outcome(LOST_RACE, reason, "changed since it was found; nothing done"))
    reason, detail = verdict
    policy = kind.settings.recovery
    status = raw["process_status"]

    if reason == stuck.HELD_BY_LIMIT:
        sent = dispatch.pump(kind)
        return _done(item, Outcome(RESENT if sent else WAITS, reason, detail), record=bool(sent))
    if reason == stuck.JOIN_LOST:
        return _done(item, _run_join(kind, raw, detail))
    if status == S.PENDING.value:
        return _done(item, _resend(kind, raw, reason, detail))
    if policy == "alert":
        return _done(item, _alert(kind, raw, reason, detail))
    if reason in (stuck.OVERRAN, stuck.CHILDREN_OVERRAN):
        why = detail if policy == "fail" else (
            f"{detail}; not retried: it is still running, a new attempt would run it twice")
        return _done(item, _fail(kind, raw, reason, why, fresh=True))
    if policy == "retry":
        tries = attempts_of_call(raw)
        max_attempts = kind.settings.max_attempts
        if tries < max_attempts:
            return _done(item, _retry(kind, raw, reason, detail, tries + 1, max_attempts))
        detail = f"{detail}; gave up after {tries} attempt(s) (max_attempts={max_attempts})"
    return _done(item, _fail(kind, raw, reason, detail))


def _guard(raw: dict, reason: str) -> dict | None:
    """An extra filter so a recovery applies only if what it judged has not changed."""
    if reason == stuck.HEARTBEAT_LOST:
        return {"heartbeat": raw.get("heartbeat")}
    return None


def _fail(kind, raw: dict, reason: str, detail: str, *, fresh: bool = False) -> Outcome:
    attempt = Attempt.of(kind.collection, raw)
    after = machine.transition(attempt, "fail", Change(
        errors=[detail], note=f"monitor: {reason}", by=BY, host=socket.gethostname(),
        sources=[raw["process_status"]], guard=None if fresh else _guard(raw, reason)))
    if after is None:
        return Outcome(LOST_RACE, reason, "changed while being failed; nothing done")
    execution.attempt_over(kind, attempt)  # a failed child may have been its parent's last one
    return Outcome(FAILED, reason, detail)


def _retry(kind, raw: dict, reason: str, detail: str, attempt_no: int, max_attempts: int) -> Outcome:
    warning = f"monitor: {detail}; sent again (attempt {attempt_no} of {max_attempts})"
    after = dispatch.redispatch(kind, raw, note=f"monitor: {reason}", by=BY, warnings=[warning],
                                sources=[raw["process_status"]], guard=_guard(raw, reason))
    if after is None:
        return Outcome(LOST_RACE, reason, "changed while being sent again; nothing done")
    return Outcome(RETRIED, reason, f"{detail}; sent again as attempt {after.get('attempt')} "
                                    f"({attempt_no} of {max_attempts}), now {after.get('process_status')}")


def _resend(kind, raw: dict, reason: str, detail: str) -> Outcome:
    """A PENDING process never ran: hand the same attempt to the broker again."""
    coll = kind.cls._get_collection()
    machine.update_fields(Attempt.of(kind.collection, raw), statuses=[S.PENDING],
                          warnings=[f"monitor: {detail}; sending it again"])
    try:
        dispatch.send(kind, raw, note=f"monitor: {reason}; sent again", by=BY)
    except BrokerUnavailable as exc:
        return Outcome(STILL_PENDING, reason, f"{detail}; broker still unreachable: {exc}")
    current = coll.find_one({"_id": raw["_id"]}, {"process_status": 1, "attempt": 1})
    if current and current.get("attempt") == raw["attempt"] and current.get("process_status") == S.PENDING.value:
        return Outcome(WAITS, reason, f"{detail}; waits for a slot")
    return Outcome(RESENT, reason, f"{detail}; sent again (attempt {raw['attempt']})")


def _alert_prefix(raw: dict, reason: str) -> str:
    return f"monitor (attempt {raw['attempt']}): {reason}"


def _alert(kind, raw: dict, reason: str, detail: str) -> Outcome:
    """Policy "alert": say so on the process once per attempt and reason; change nothing else."""
    prefix = _alert_prefix(raw, reason)
    if any(str(w).startswith(prefix) for w in raw.get("warnings") or []):
        return Outcome(ALREADY_ALERTED, reason, f"{detail}; left alone (recovery policy: alert)")
    machine.update_fields(Attempt.of(kind.collection, raw), statuses=[raw["process_status"]],
                          warnings=[f"{prefix}: {detail}; left alone (recovery policy: alert)"])
    return Outcome(ALERTED, reason, f"{detail}; left alone (recovery policy: alert)")


def _run_join(kind, raw: dict, detail: str) -> Outcome:
    attempt = Attempt.of(kind.collection, raw)
    machine.update_fields(attempt, statuses=[S.WAITING_FOR_RESULT],
                          warnings=[f"monitor: {stuck.JOIN_LOST}; running it now"])
    result = execution.try_join(attempt)
    if result is None:
        return Outcome(LOST_RACE, stuck.JOIN_LOST, "another caller ran the join, or a child is still running")
    return Outcome(JOINED, stuck.JOIN_LOST, f"{detail}; join run by the monitor, process now {result}")


def _done(item: stuck.Stuck, outcome: Outcome, *, record: bool | None = None) -> Outcome:
    outcome.stuck = item
    level = logging.WARNING if outcome.recovered or outcome.action == ALERTED else logging.INFO
    log.log(level, "monitor: %s %s %s (attempt %s): %s: %s -> %s", item.kind.name, item.id, item.status,
            item.attempt, item.reason, item.detail, outcome.action)
    if record if record is not None else (outcome.recovered or outcome.action == ALERTED):
        _record(item, outcome)
    return outcome


def _record(item: stuck.Stuck, outcome: Outcome) -> None:
    recoveries.record(collection=item.collection, id=item.id, kind=item.kind.name, status=item.status,
                      attempt=item.attempt, reason=item.reason, detail=outcome.detail,
                      action=outcome.action)


# -- the sweep ------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep found and did."""

    started: datetime
    seconds: float = 0.0
    pumped: dict = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    queries: list = field(default_factory=list)

    @property
    def recovered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.recovered]

    def lines(self) -> list[str]:
        out = []
        for kind_name, n in sorted(self.pumped.items()):
            out.append(f"sent {n} held PENDING process(es) of {kind_name}")
        for o in self.outcomes:
            s = o.stuck
            out.append(f"{s.collection}/{s.id} {s.kind.name} {s.status} (attempt {s.attempt}): "
                       f"{s.reason}: {o.detail} -> {o.action}")
        out.append(f"sweep at {self.started.isoformat(timespec='seconds')}Z: {len(self.queries)} "
                   f"queries, {len(self.outcomes)} stuck, {len(self.recovered)} recovered, "
                   f"{self.seconds * 1000:.0f} ms")
        return out


def sweep(now: datetime | None = None, *, collections=None, limit: int = 1000) -> SweepReport:
    """One sweep: send held processes of limited kinds, then find and recover stuck ones."""
    t0 = time.perf_counter()
    db.database()
    report = SweepReport(started=now or utcnow())
    try:  # bucket claims whose check never ran (no worker consumed proc.monitor): forget them
        db.database()[messaging.BUCKETS].delete_many({"end": {"$lt": report.started - timedelta(hours=1)}})
    except Exception:
        log.exception("monitor: could not drop stale bucket claims")
    for kind in registry.kinds():
        if kind.settings.limit and (collections is None or kind.collection in collections):
            try:
                sent = dispatch.pump(kind)
            except Exception:
                log.exception("monitor: could not send held %s processes", kind.name)
                continue
            if sent:
                report.pumped[kind.name] = sent
    for item in stuck.find(now, collections=collections, limit=limit, query_log=report.queries):
        try:
            report.outcomes.append(recover(item, now=now))
        except Exception as exc:  # one bad process must not stop the sweep
            log.exception("monitor: recovery of %s %s failed", item.kind.name, item.id)
            report.outcomes.append(Outcome(Action.ERROR, item.reason, f"{type(exc).__name__}: {exc}",
                                           stuck=item))
    report.seconds = time.perf_counter() - t0
    return report

#: Names that moved in the redesign: importable from here for one release, with a warning.
__getattr__ = moved.names(__name__, {'schedule': ('messaging', 'schedule_check'), 'monitor_task_id': ('messaging', 'check_task_id')})
