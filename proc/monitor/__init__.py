"""The monitor: nothing stays PENDING, DISPATCHED, RUNNING or WAITING_FOR_RESULT forever.

Celery alone loses track of work (a worker killed mid-task, a message lost with the
broker, a join that never ran). Two mechanisms catch it, both built on the same
detection as the check-status page (``proc.monitor.stuck.diagnose``):

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
  (``proc.monitor.stuck.find``) and recovers each. A process whose send the broker refused
  is found at any age; the sweep asks the broker once (``messaging.broker_answers``) and
  sends them only if it answers, so held work leaves within one sweep of the broker's return
  and a sweep during an outage costs one connection attempt, not one per process.

Recovery (``proc.monitor.recovery.recover``) runs what the kind's recovery policy says for the
reason found: a row of ``proc.status.RECOVERY`` (the table is in ``proc.monitor.recovery``'s
docstring). Every recovery is a conditional transition by the monitor, logged and recorded.

Countdowns and the Redis visibility timeout: Redis hands a message with a countdown to a
worker at once, and the worker holds it unacknowledged until it is due; if that takes
longer than the broker's ``visibility_timeout`` Redis delivers it again to another worker
(early redelivery: two copies). Every countdown this module schedules is therefore capped
at half the visibility timeout (``messaging.max_countdown``); a check that fires before
the process is due simply schedules itself again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import registry
from ..exceptions import UnknownKind
from ..run import checks, dispatch, limits, messaging
from ..status import BROKER_UNREACHABLE, PROCESSING_VALUES, ProcessStatus as S
from ..store import db, reader
from ..timeutil import utcnow
from . import stuck
from .recovery import Action, Outcome, broker_still_down, recover

log = logging.getLogger(__name__)

#: Seconds between two sweeps by default (``PROC_SWEEP_INTERVAL`` sets it).
DEFAULT_SWEEP_INTERVAL = 60.0


#: The actions after which a per-process check looks again later.
LOOK_AGAIN = frozenset({Action.RESCHEDULED, Action.ALERTED, Action.ALREADY_ALERTED, Action.STILL_PENDING,
                        Action.WAITS, Action.LOST_RACE})


# -- one check ----------------------------------------------------------------------------


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
        return Outcome(Action.NOTHING, detail="finished, replaced by a newer attempt, or gone")
    problem = reader.problem(raw)
    if problem is not None:  # its fields cannot be trusted to judge or condition a write
        log.warning("monitor: %s %s could not be read (%s); left alone", collection, id, problem)
        return Outcome(Action.NOTHING, detail=f"could not be read: {problem}")
    now = now or utcnow()
    verdict = stuck.diagnose(kind, raw, now, limits.usage())
    if verdict is None:
        outcome = Outcome(Action.RESCHEDULED, detail="alive")
    else:
        outcome = recover(stuck.Stuck(kind, raw, *verdict), now=now)
    if outcome.action in LOOK_AGAIN:
        when = _next_check(kind, raw, now)
        countdown = checks.schedule_check(kind, raw, when, app=app)
        outcome.next_check = countdown
    return outcome


def check_bucket(kind_name: str, start: datetime, end: datetime, *, now: datetime | None = None,
                 app=None) -> list[Outcome]:
    """The check of one deadline bucket: every active process of the kind whose deadline is
    in ``[start, end)`` gets the per-process check (one query on (process_status, deadline)).
    A bucket message that fires early (its countdown was capped) sends itself again."""
    now = now or utcnow()
    if now < end:
        checks.send_bucket(kind_name, start, end, app=app)
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
    checks.forget_bucket(kind_name, start)
    return outcomes


def _next_check(kind, raw: dict, now: datetime) -> datetime:
    """Before the deadline: at the deadline. After it (still alive): one interval from now."""
    deadline = raw.get("deadline")
    if deadline is not None and deadline > now:
        return deadline
    return now + timedelta(seconds=kind.settings.monitor_interval)


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
        db.database()[checks.BUCKETS].delete_many({"end": {"$lt": report.started - timedelta(hours=1)}})
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
    broker_up = None  # asked once, when the first process the broker refused is found
    for item in stuck.find(now, collections=collections, limit=limit, query_log=report.queries):
        try:
            if item.reason == BROKER_UNREACHABLE:
                broker_up = messaging.broker_answers() if broker_up is None else broker_up
                if not broker_up:
                    report.outcomes.append(broker_still_down(item))
                    continue
            report.outcomes.append(recover(item, now=now))
        except Exception as exc:  # one bad process must not stop the sweep
            log.exception("monitor: recovery of %s %s failed", item.kind.name, item.id)
            report.outcomes.append(Outcome(Action.ERROR, item.reason, f"{type(exc).__name__}: {exc}",
                                           stuck=item))
    report.seconds = time.perf_counter() - t0
    return report
