"""The lifecycle as data, in one place: the statuses of a process and their groups, the rules
of which status changes exist (``RULES``), the history entries that are not status changes
(``MARKS``), the phases an ended attempt's time is split into (``PHASE_OF``), the reasons a
process needs attention, and what the monitor does about each under each recovery policy
(``RECOVERY``).

Statuses are stored in MongoDB as exactly these strings; ``ProcessStatus.RUNNING == "RUNNING"``.
Nothing here reads or writes: ``proc.machine`` applies the rules (the one status writer),
``proc.machine.phases`` computes the phases, ``proc.monitor.stuck`` diagnoses the reasons and
``proc.monitor.recovery`` runs the recovery table.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ProcessStatus(str, Enum):
    """The life of one process, in lifecycle order."""

    READY = "READY"
    """Never called, or reset: a process may be started."""
    PENDING = "PENDING"
    """Requested, not yet handed to the broker (e.g. held by a concurrency limit)."""
    DISPATCHED = "DISPATCHED"
    """The broker accepted the Celery message; no worker has started it yet."""
    RUNNING = "RUNNING"
    """A worker claimed it and runs the process method (or its join)."""
    WAITING_FOR_RESULT = "WAITING_FOR_RESULT"
    """Waits for its child processes; its join runs when the last one finishes."""
    SUCCESS = "SUCCESS"
    """The last process ended well."""
    FAILURE = "FAILURE"
    """The last process ended with errors (see ``errors``)."""

    def __str__(self) -> str:  # "RUNNING", not "ProcessStatus.RUNNING"
        return self.value

    @classmethod
    def parse(cls, value: str) -> "ProcessStatus":
        """Return the status named ``value`` or raise ``ValueError`` naming the valid ones."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown process status {value!r}; valid: {valid}") from None


#: Every status, in lifecycle order (the order of the boxes on the status page).
LIFECYCLE = tuple(ProcessStatus)

#: A process in one of these is under way: no new process may start on its document.
PROCESSING = frozenset(
    {
        ProcessStatus.PENDING,
        ProcessStatus.DISPATCHED,
        ProcessStatus.RUNNING,
        ProcessStatus.WAITING_FOR_RESULT,
    }
)

#: A new process may start on a document in one of these.
NOT_PROCESSING = frozenset({ProcessStatus.READY, ProcessStatus.SUCCESS, ProcessStatus.FAILURE})

#: How a process ended.
COMPLETED = frozenset({ProcessStatus.SUCCESS, ProcessStatus.FAILURE})

#: Plain string values, for queries.
VALUES = tuple(s.value for s in LIFECYCLE)
PROCESSING_VALUES = tuple(s.value for s in LIFECYCLE if s in PROCESSING)


# -- the rules: which status changes exist --------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One kind of status change: from any of ``sources`` to ``target``."""

    event: str
    sources: frozenset
    target: ProcessStatus
    new_attempt: bool = False
    doc: str = ""


_S = ProcessStatus

#: The whole truth about allowed transitions, by event.
RULES: dict[str, Rule] = {
    r.event: r
    for r in (
        Rule("request", frozenset({_S.READY, _S.SUCCESS, _S.FAILURE}), _S.PENDING, True,
             "a process method was called; a new attempt begins"),
        Rule("dispatched", frozenset({_S.PENDING}), _S.DISPATCHED, False,
             "the broker accepted the Celery message"),
        Rule("claim", frozenset({_S.PENDING, _S.DISPATCHED}), _S.RUNNING, False,
             "a worker started the message of this attempt (it may overtake the DISPATCHED write)"),
        Rule("wait", frozenset({_S.RUNNING}), _S.WAITING_FOR_RESULT, False,
             "the method returned with child processes still running"),
        Rule("join", frozenset({_S.WAITING_FOR_RESULT}), _S.RUNNING, False,
             "the last child finished; exactly one caller wins this and runs the join"),
        Rule("succeed", frozenset({_S.RUNNING}), _S.SUCCESS, False, "the method (or join) returned"),
        Rule("fail", PROCESSING, _S.FAILURE, False,
             "the method raised, or recovery/cancel ended an active process"),
        Rule("reset", PROCESSING | {_S.FAILURE}, _S.READY, False,
             "an operator put a stuck or failed process back to READY"),
        Rule("redispatch", PROCESSING | {_S.FAILURE}, _S.PENDING, True,
             "recovery or an operator sends a stuck or failed process again, as a new attempt"),
    )
}

#: Every allowed (from, to) pair.
ALLOWED: frozenset = frozenset((src, r.target) for r in RULES.values() for src in r.sources)


@dataclass(frozen=True)
class Mark:
    """A history entry that is not a status change: something happened to an attempt while
    its status stayed ``status``."""

    event: str
    status: ProcessStatus
    doc: str = ""


MARKS: dict[str, Mark] = {
    m.event: m
    for m in (
        Mark("stopped", _S.FAILURE, "the code of a cancelled attempt has stopped running"),
        Mark("terminate_requested", _S.FAILURE, "a forced stop is due after the grace period"),
        Mark("terminate_sent", _S.FAILURE, "the grace passed, the code still ran: terminate sent"),
        Mark("terminate_not_sent", _S.FAILURE, "the broker did not take the terminate the grace called for"),
        Mark("cannot_terminate", _S.FAILURE, "its pool cannot stop running code (threads, solo)"),
    )
}


# -- phases: where an attempt's time went ---------------------------------------------------

#: The phase each active status counts towards.
PHASE_OF = {_S.PENDING.value: "held", _S.DISPATCHED.value: "queued", _S.RUNNING.value: "run",
            _S.WAITING_FOR_RESULT.value: "waiting"}
#: Every phase, in lifecycle order.
PHASES = ("held", "queued", "run", "waiting")


# -- needing attention, and the recovery policies -------------------------------------------

#: Why a process needs attention (``proc.monitor.stuck.diagnose``), by the status it is in.
HELD_BY_LIMIT = "held by the limit"  # PENDING
BROKER_UNREACHABLE = "broker unreachable"  # PENDING
NOT_SENT = "never handed to the broker"  # PENDING
NOT_STARTED = "not started by any worker"  # DISPATCHED
HEARTBEAT_LOST = "worker heartbeat lost"  # RUNNING
OVERRAN = "overran expected duration"  # RUNNING
JOIN_LOST = "join never ran"  # WAITING_FOR_RESULT
CHILDREN_OVERRAN = "children overran"  # WAITING_FOR_RESULT
REASONS = (HELD_BY_LIMIT, BROKER_UNREACHABLE, NOT_SENT, NOT_STARTED, HEARTBEAT_LOST, OVERRAN, JOIN_LOST,
           CHILDREN_OVERRAN)

#: What the monitor does with a stuck process, per recovery policy (a kind's ``recovery``) and
#: reason: the names of ``proc.monitor.recovery.ACTIONS``. A new policy is one row.
#:
#: - ``pump``: send held processes of the kind while slots are free;
#: - ``resend``: hand the same attempt to the broker again (nothing has run);
#: - ``join``: run the lost join once (the WAITING -> RUNNING flip lets one caller win);
#: - ``fail``: FAILURE, conditional on what was judged (e.g. the heartbeat that was lost);
#: - ``fail_running``: FAILURE of work that is still running (fresh heartbeat, live children);
#: - ``fail_not_retried``: the same, saying why "retry" did not retry: a new attempt would
#:   run the work twice at once;
#: - ``retry``: a new attempt, up to the kind's ``max_attempts``, then ``fail``;
#: - ``alert``: a warning on the process, once per attempt and reason; nothing else changes.
RECOVERY: dict[str, dict[str, str]] = {
    "fail": {HELD_BY_LIMIT: "pump", BROKER_UNREACHABLE: "resend", NOT_SENT: "resend",
             NOT_STARTED: "fail", HEARTBEAT_LOST: "fail", OVERRAN: "fail_running",
             JOIN_LOST: "join", CHILDREN_OVERRAN: "fail_running"},
    "retry": {HELD_BY_LIMIT: "pump", BROKER_UNREACHABLE: "resend", NOT_SENT: "resend",
              NOT_STARTED: "retry", HEARTBEAT_LOST: "retry", OVERRAN: "fail_not_retried",
              JOIN_LOST: "join", CHILDREN_OVERRAN: "fail_not_retried"},
    "alert": {HELD_BY_LIMIT: "pump", BROKER_UNREACHABLE: "resend", NOT_SENT: "resend",
              NOT_STARTED: "alert", HEARTBEAT_LOST: "alert", OVERRAN: "alert",
              JOIN_LOST: "join", CHILDREN_OVERRAN: "alert"},
}
