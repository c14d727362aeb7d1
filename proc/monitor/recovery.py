"""Recovery: what the monitor does with one stuck process, and the record of what it did.

The policy is data: ``proc.status.RECOVERY`` names an action per recovery policy (a kind's
``recovery``: fail, retry, alert) and reason (``proc.monitor.stuck.diagnose``); ``recover``
runs it (``ACTIONS``). In short:

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
broker takes it; a second copy of the message is harmless. One whose send the broker refused
needs no queue timeout: the next sweep that finds the broker answering sends it
(``broker_still_down`` while it does not). A lost join is normal work that
was not delivered, so it runs whatever the policy (the WAITING -> RUNNING flip lets one
caller win).

A worker that sees one of its own pool processes die applies the "heartbeat lost" column at
once (``recover_lost``, ``by="worker:<node name>"``), without waiting for the heartbeat to
age; the monitor remains the backstop for whole hosts.

Every recovery is one conditional transition (``by="monitor"``) that also writes the
reason to ``errors`` or ``warnings`` and to ``history``; it is logged and recorded in
``proc_recoveries`` (``record``; the check-status page lists them with
``recent_recoveries``). A late write of the superseded attempt (its worker was only slow,
or is released later) finds another attempt and changes nothing. The records are not the
truth (the process document is); they let the page list recent recoveries in one query on
the ``time`` index.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from .. import machine
from ..exceptions import BrokerUnavailable
from ..machine import Attempt, Change
from ..run import dispatch, execution, limits
from ..status import HEARTBEAT_LOST, RECOVERY, ProcessStatus as S
from ..store import db
from ..timeutil import utcnow
from . import stuck

log = logging.getLogger(__name__)

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


#: The actions that changed the process (the rest report it only).
RECOVERED = frozenset({Action.FAILED, Action.RETRIED, Action.RESENT, Action.JOINED})




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
    """Apply the kind's recovery policy to one stuck process: the action that
    ``RECOVERY[policy][reason]`` names (``proc.status``), run by ``ACTIONS``."""
    now = now or utcnow()
    kind, reason = item.kind, item.reason
    # Act on the whole document at the attempt and state it was judged in, if still stuck.
    raw = kind.cls._get_collection().find_one(
        {"_id": item.id, "attempt": item.attempt, "process_status": item.status})
    verdict = None if raw is None else stuck.diagnose(kind, raw, now, limits.usage())
    if verdict is None:
        return _done(item, Outcome(Action.LOST_RACE, reason, "changed since it was found; nothing done"))
    reason, detail = verdict
    action = ACTIONS[RECOVERY[kind.settings.recovery][reason]]
    return _done(item, action(kind, raw, reason, detail))


def broker_still_down(item: stuck.Stuck) -> Outcome:
    """A process the broker refused, found while the broker still does not answer: nothing is
    sent (the sweep asked the broker once), it stays PENDING for the next sweep."""
    return _done(item, Outcome(Action.STILL_PENDING, item.reason,
                               f"{item.detail}; broker still unreachable, sent once it answers"))


def _done(item: stuck.Stuck, outcome: Outcome, by: str = BY) -> Outcome:
    """Log the outcome, and record it when the process was recovered or alerted about."""
    outcome.stuck = item
    noted = outcome.recovered or outcome.action == Action.ALERTED
    log.log(logging.WARNING if noted else logging.INFO, "%s: %s %s %s (attempt %s): %s: %s -> %s",
            by, item.kind.name, item.id, item.status, item.attempt, item.reason, item.detail, outcome.action)
    if noted:
        record(collection=item.collection, id=item.id, kind=item.kind.name, status=item.status,
               attempt=item.attempt, reason=item.reason, detail=outcome.detail, action=outcome.action)
    return outcome


def recover_lost(kind, raw: dict, detail: str, *, by: str) -> Outcome:
    """A worker saw the pool process that ran ``raw``'s RUNNING attempt die
    (``proc.run.pools.lost_here``): apply the kind's policy for "heartbeat lost" now, as the
    monitor would once the heartbeat is old, written and recorded as done ``by`` that worker.
    Conditional on the heartbeat it judged: a live attempt writes a new one."""
    item = stuck.Stuck(kind, raw, HEARTBEAT_LOST, detail)
    action = ACTIONS[RECOVERY[kind.settings.recovery][HEARTBEAT_LOST]]
    return _done(item, action(kind, raw, HEARTBEAT_LOST, detail, by=by), by)


# -- the actions of the recovery table ----------------------------------------------------------
# Each takes (kind, raw, reason, detail, by=): the kind, the whole document as read again, the
# reason and detail of the fresh verdict, and who acts (the monitor, or the worker that saw
# its pool process die); each changes the process with conditional writes only, and says
# what it did.


def _guard(raw: dict, reason: str) -> dict | None:
    """An extra filter so a recovery applies only if what it judged has not changed."""
    if reason == stuck.HEARTBEAT_LOST:
        return {"heartbeat": raw.get("heartbeat")}
    return None


def pump(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """Held by the limit: send held processes of the kind while slots are free."""
    sent = dispatch.pump(kind)
    return Outcome(Action.RESENT if sent else Action.WAITS, reason, detail)


def resend(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """A PENDING process never ran: hand the same attempt to the broker again."""
    coll = kind.cls._get_collection()
    machine.update_fields(Attempt.of(kind.collection, raw), statuses=[S.PENDING],
                          warnings=[f"{by}: {detail}; sending it again"])
    try:
        dispatch.send(kind, raw, note=f"{by}: {reason}; sent again", by=by)
    except BrokerUnavailable as exc:
        return Outcome(Action.STILL_PENDING, reason, f"{detail}; broker still unreachable: {exc}")
    current = coll.find_one({"_id": raw["_id"]}, {"process_status": 1, "attempt": 1})
    if current and current.get("attempt") == raw["attempt"] and current.get("process_status") == S.PENDING.value:
        return Outcome(Action.WAITS, reason, f"{detail}; waits for a slot")
    return Outcome(Action.RESENT, reason, f"{detail}; sent again (attempt {raw['attempt']})")


def join(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """Every child finished but the join never ran: run it once (one caller wins the flip)."""
    attempt = Attempt.of(kind.collection, raw)
    machine.update_fields(attempt, statuses=[S.WAITING_FOR_RESULT],
                          warnings=[f"{by}: {stuck.JOIN_LOST}; running it now"])
    result = execution.try_join(attempt)
    if result is None:
        return Outcome(Action.LOST_RACE, stuck.JOIN_LOST, "another caller ran the join, or a child is still running")
    return Outcome(Action.JOINED, stuck.JOIN_LOST, f"{detail}; join run by the monitor, process now {result}")


def _alert_prefix(raw: dict, reason: str, by: str = BY) -> str:
    return f"{by} (attempt {raw['attempt']}): {reason}"


def alert(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """Policy "alert": say so on the process once per attempt and reason; change nothing else."""
    prefix = _alert_prefix(raw, reason, by)
    if any(str(w).startswith(prefix) for w in raw.get("warnings") or []):
        return Outcome(Action.ALREADY_ALERTED, reason, f"{detail}; left alone (recovery policy: alert)")
    machine.update_fields(Attempt.of(kind.collection, raw), statuses=[raw["process_status"]],
                          warnings=[f"{prefix}: {detail}; left alone (recovery policy: alert)"])
    return Outcome(Action.ALERTED, reason, f"{detail}; left alone (recovery policy: alert)")


def fail(kind, raw: dict, reason: str, detail: str, *, by: str = BY, fresh: bool = False) -> Outcome:
    """FAILURE, conditional on what was judged (``_guard``) unless the work is ``fresh``."""
    attempt = Attempt.of(kind.collection, raw)
    after = machine.transition(attempt, "fail", Change(
        errors=[detail], note=f"{by}: {reason}", by=by, host=socket.gethostname(),
        sources=[raw["process_status"]], guard=None if fresh else _guard(raw, reason)))
    if after is None:
        return Outcome(Action.LOST_RACE, reason, "changed while being failed; nothing done")
    execution.attempt_over(kind, attempt)  # a failed child may have been its parent's last one
    return Outcome(Action.FAILED, reason, detail)


def fail_running(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """FAILURE of work that is still running (fresh heartbeat, or live children)."""
    return fail(kind, raw, reason, detail, by=by, fresh=True)


def fail_not_retried(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """Policy "retry" for work that is still running: FAILURE, saying why it was not retried."""
    why = f"{detail}; not retried: it is still running, a new attempt would run it twice"
    return fail(kind, raw, reason, why, by=by, fresh=True)


def retry(kind, raw: dict, reason: str, detail: str, *, by: str = BY) -> Outcome:
    """A new attempt, up to the kind's ``max_attempts`` for this call; then FAILURE."""
    tries = attempts_of_call(raw)
    max_attempts = kind.settings.max_attempts
    if tries >= max_attempts:
        return fail(kind, raw, reason, f"{detail}; gave up after {tries} attempt(s) (max_attempts={max_attempts})",
                    by=by)
    attempt_no = tries + 1
    warning = f"{by}: {detail}; sent again (attempt {attempt_no} of {max_attempts})"
    after = dispatch.redispatch(kind, raw, note=f"{by}: {reason}", by=by, warnings=[warning],
                                sources=[raw["process_status"]], guard=_guard(raw, reason))
    if after is None:
        return Outcome(Action.LOST_RACE, reason, "changed while being sent again; nothing done")
    return Outcome(Action.RETRIED, reason, f"{detail}; sent again as attempt {after.get('attempt')} "
                                           f"({attempt_no} of {max_attempts}), now {after.get('process_status')}")


#: The actions ``proc.status.RECOVERY`` names: a new action is one function and one entry.
ACTIONS = {f.__name__: f for f in (pump, resend, join, alert, fail, fail_running, fail_not_retried, retry)}


# -- the record of recoveries -----------------------------------------------------------------

RECOVERIES = "proc_recoveries"
"""The collection of recovery records."""

RECOVERY_RECORD_TTL = 7 * 24 * 3600
"""A recovery record is kept this long on a real server (TTL index on ``time``)."""


def record(**fields) -> None:
    """Record one recovery or alert (never raises: the process document already says it)."""
    try:
        db.database()[RECOVERIES].insert_one({"time": utcnow(), **fields})
    except Exception:
        log.exception("could not record the recovery of %s %s", fields.get("kind"), fields.get("id"))


def ensure_indexes() -> None:
    """The index of ``proc_recoveries`` (newest first; expire after RECOVERY_RECORD_TTL)."""
    db.database()[RECOVERIES].create_index("time", expireAfterSeconds=RECOVERY_RECORD_TTL)


def recent_recoveries(limit: int = 50, *, since: datetime | None = None) -> list[dict]:
    """The newest recoveries and alerts (at most ``limit``, none before ``since``), newest first.

    One query on the ``time`` index (for the check-status page).
    """
    query = {} if since is None else {"time": {"$gte": since}}
    return list(db.database()[RECOVERIES].find(query, {"_id": 0}).sort("time", -1).limit(limit))
