"""The operator actions, each written once, over a list of processes: reset, redispatch and
cancel (with its subtree and, if asked, the forced stop of what it ended).

An action on one process (``proc.ops.admin``) is ``apply`` of one ``Target``; a bulk action
(``proc.ops.bulk``) is ``apply`` of each batch of its matches. Both judge a process with the
same rule (``refusal``) before asking, and ``apply`` writes only what was judged:

- each status write is the single transition's conditional write (id, attempt, and the status
  the process was judged at), recorded in its history with ``by`` and ``note``. Per collection
  one ``dispatch.write_each``: one ``update_one`` for one process, one ``bulk_write`` and one read
  of which landed for many. A process that changed since it was judged is not written: it is
  returned in ``missed``;
- reset and cancel then end the attempts that were active: a cancel's subtrees (one walk,
  level by level, for every root), one revoke of every ended task, the slots given back (one
  write and a pump per limited kind), and the parents told (at the end of ``apply``, or by the
  caller that passes ``parents``: a bulk run tells them once every batch is done, so no parent
  cancelled too runs its join);
- redispatch begins a new attempt per process (``dispatch.redispatch_each``: the write, the old
  slots, one publish per message and one DISPATCHED write per kind).

Nothing here reads a collection to find processes: callers hand in what they read (one
document by ``_id``, or a filter's matches), so one process costs the same whatever the size of
its collection.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from .. import machine, registry
from ..monitor import stuck
from ..monitor import terminate as stopping
from ..run import dispatch, execution, limits, messaging
from ..exceptions import IllegalTransition, ProcError, ProcessHealthy
from ..machine import Attempt, Change, many
from ..status import PROCESSING_VALUES, ProcessStatus as S
from ..timeutil import utcnow

log = logging.getLogger(__name__)

ACTIONS = ("reset", "redispatch", "cancel")
#: The state-machine event each action writes.
EVENTS = {"reset": "reset", "redispatch": "redispatch", "cancel": "fail"}
#: How a history note names each action ("reset by cli:ann").
VERBS = {"reset": "reset", "redispatch": "redispatched", "cancel": "cancelled"}


@dataclass
class Target:
    """One process an action is asked to change, as read and judged: its collection, its
    document (at least ``stuck.PROJECTION``'s fields) and the kind of its current process."""

    collection: str
    raw: dict
    kind: registry.Kind | None

    @property
    def id(self):
        return self.raw["_id"]

    @property
    def attempt(self) -> Attempt:
        return Attempt.of(self.collection, self.raw)

    @property
    def active(self) -> bool:
        return self.raw.get("process_status") in PROCESSING_VALUES


@dataclass
class Outcome:
    """What ``apply`` did: the targets written, those that had changed meanwhile, and the
    forced stops it planned (``terminate``)."""

    changed: list = field(default_factory=list)
    missed: list = field(default_factory=list)
    stops: list = field(default_factory=list)
    """One ``proc.monitor.terminate.Plan`` per attempt a cancel ended (roots and subtrees)."""
    written: dict = field(default_factory=dict)
    """Per collection, by ``_id``: what each write of the action returned (in order)."""

    def after(self, target: Target) -> dict:
        """``target``'s document as read, with what the action's writes set."""
        out = dict(target.raw)
        for writes in self.written.get(target.collection, ()):
            out.update(writes.get(target.id) or {})
        return out


def require_stuck(kind, raw: dict, action: str, usage: dict | None = None) -> None:
    """The health rule of reset and redispatch: raise unless ``raw`` is failed or stuck.
    ``usage`` (``limits.usage()``) may be read once for many documents."""
    status = raw.get("process_status")
    if status in (S.FAILURE.value,) or kind is None:
        return
    if status in (S.READY.value, S.SUCCESS.value):
        raise IllegalTransition(f"cannot {action} a process that is {status}")
    if stuck.diagnose(kind, raw, utcnow(), limits.usage() if usage is None else usage) is None:
        raise ProcessHealthy(
            f"{kind.name} {raw['_id']} is {status} and healthy (within its thresholds); "
            f"{action} is for stuck or failed processes. Use force to {action} it anyway, or cancel it.")


def refusal(action: str, target: Target, *, force: bool, usage: dict | None = None) -> ProcError | None:
    """Why ``action`` refuses ``target`` now (the error a single action raises, whose text a
    bulk action lists), or None: no process to send again, a status the action's event does
    not start from, or (reset and redispatch, unless ``force``) a healthy process."""
    status = target.raw.get("process_status")
    if action == "redispatch" and target.kind is None:
        return ProcError(f"{target.collection}/{target.id} has no process to send again "
                         "(current_process is empty)")
    if status not in {s.value for s in machine.RULES[EVENTS[action]].sources}:
        return IllegalTransition(f"cannot {action} a process that is {status}")
    if action != "cancel" and not force:
        try:
            require_stuck(target.kind, target.raw, action, usage)
        except (ProcessHealthy, IllegalTransition) as exc:
            return exc
    return None


def change(action: str, *, by: str, note: str, status: str) -> Change:
    """The write of a reset or a cancel by ``by`` of a process judged in ``status``."""
    host = socket.gethostname()
    if action == "reset":
        return Change(fields={"current_process_step": None, "deadline": None}, note=note, by=by,
                      host=host, sources=[status])
    return Change(errors=[f"cancelled by {by}"], note=note, by=by, host=host, sources=[status])


def apply(action: str, targets, *, by: str, note: str | None = None, terminate: bool = False,
          parents: dict | None = None) -> Outcome:
    """``action`` on every target (judged already: see ``refusal``), as the module docstring
    says. ``note`` defaults to "<verb> by <by>"; ``terminate`` (cancel) plans the forced stop
    of every attempt it ended; ``parents`` collects the parents to tell instead of telling them
    here."""
    note = note or f"{VERBS[action]} by {by}"
    tell = parents is None
    parents = {} if parents is None else parents
    out = Outcome()
    by_collection: dict[str, list[Target]] = {}
    for target in targets:
        by_collection.setdefault(target.collection, []).append(target)
    for collection, members in by_collection.items():
        if action == "redispatch":
            writes = dispatch.redispatch_each(collection, [(t.kind, t.raw) for t in members], note=note, by=by)
        else:
            writes = ({after["_id"]: after for after in dispatch.write_each(collection, [
                (t.attempt, change(action, by=by, note=note, status=t.raw["process_status"])) for t in members],
                EVENTS[action])},)
        landed = writes[0]
        out.changed += [t for t in members if t.id in landed]
        out.missed += [t for t in members if t.id not in landed]
        out.written[collection] = writes
    if action != "redispatch":
        _end(action, [t for t in out.changed if t.active], by=by, terminate=terminate, out=out, parents=parents)
    if tell:
        tell_parents(parents)
    return out


def tell_parents(parents: dict) -> None:
    """Let each parent of ``parents`` (by key, as ``apply`` collects them) join if the child
    that ended was its last one."""
    for parent in parents.values():
        execution.notify_parent(parent)


def _end(action: str, active: list[Target], *, by: str, terminate: bool, out: Outcome, parents: dict) -> None:
    """The end of the attempts a reset or cancel changed while they were active: a cancel's
    subtrees, one revoke and the forced stops; then the slots back and the parents noted."""
    if action == "cancel" and active:
        ended = [(t.attempt, t.raw) for t in active] + cancel_subtrees([t.attempt for t in active], by=by)
        revoke([r["celery_task_id"] for _, r in ended if r.get("celery_task_id")])
        if terminate:
            out.stops += [stopping.plan(attempt, raw) for attempt, raw in ended]
    by_kind: dict[str, tuple] = {}
    for t in active:
        if t.kind is not None:
            by_kind.setdefault(t.kind.name, (t.kind, []))[1].append(t.attempt)
    for kind, attempts in by_kind.values():
        dispatch.release_slots(kind, attempts)
    for t in active:
        parent = Attempt.from_ref(t.attempt.parent)
        if parent is not None:
            parents[parent.key] = parent


def revoke(task_ids: list[str]) -> None:
    """Revoke the Celery tasks of ended attempts, in one broadcast."""
    if not task_ids:
        return
    try:
        messaging.get_app().control.revoke(task_ids)
    except Exception as exc:  # the attempt check already makes the messages harmless
        log.warning("could not revoke %d task(s): %s", len(task_ids), exc)


def cancel_subtrees(roots, *, by: str) -> list[tuple[Attempt, dict]]:
    """Cancel the active descendants of the cancelled attempts ``roots``: level by level, one
    read and one conditional write per collection (and attempt number) that holds children
    of the level, shared by every root. The parents' joins do not run. Returns each cancelled
    attempt with its document as it was read before the cancel."""
    processing = sorted(s.value for s in machine.RULES["fail"].sources)
    note = f"cancelled by {by}"
    change_ = Change(errors=[f"{note} (with its parent)"], note=note, by=by, host=socket.gethostname())
    keys, ended = [root.key for root in roots], []
    while keys:
        level: list[str] = []
        for cls in {c._get_collection_name(): c for c in registry.proc_classes()}.values():
            coll = cls._get_collection()
            found = list(coll.find({"parent_key": {"$in": keys}, "process_status": {"$in": processing}},
                                   {"attempt": 1, "celery_task_id": 1, "current_process": 1, "parent": 1,
                                    "process_status": 1, "worker_pool": 1, "worker_hostname": 1}))
            by_number: dict[int, list] = {}
            for child in found:
                by_number.setdefault(child.get("attempt", 0), []).append(child)
            for number, group in by_number.items():
                if not many.transition_many(coll.name, [c["_id"] for c in group], number, "fail", change_):
                    continue
                for child in group:  # one that finished meanwhile: slot and check are gone already
                    child_attempt = Attempt.of(coll.name, child)
                    execution.attempt_over(registry.kind_of(cls, child), child_attempt, parent=False)
                    level.append(child_attempt.key)
                    ended.append((child_attempt, child))
        keys = level
    return ended
