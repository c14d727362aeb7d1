"""Operator actions on one process, named by collection and id: reset, redispatch, cancel.

Each reads the process by ``_id``, judges it (``actions.refusal``: raised, not listed) and is
``actions.apply`` of that one process: one state-machine transition, written to its history
with who did it (``by``: "token:<name>", "cli:<user>", "monitor") and when. Reset and
redispatch are for stuck or failed processes: asked of a healthy active process they raise
``ProcessHealthy`` unless ``force=True``. A process that changed between the read and the
write raises ``TransitionConflict``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import registry
from ..exceptions import TransitionConflict
from . import actions


def load(collection: str, id) -> actions.Target:
    """The process ``collection``/``id`` as stored (one read by ``_id``), or ``LookupError``."""
    cls = registry.class_for(collection)
    raw = cls._get_collection().find_one({"_id": id})
    if raw is None:
        raise LookupError(f"no {cls.__name__} with id {id!r} in collection {collection!r}")
    return actions.Target(collection, raw, registry.kind_of(cls, raw))


@dataclass(frozen=True)
class Done:
    """What a single action did: the process after it, and the forced stops a cancel with
    ``terminate`` planned."""

    after: dict
    """The document as read, with what the action's writes set."""
    stops: list = field(default_factory=list)
    """One ``proc.monitor.terminate.Plan`` per attempt a cancel ended (the process and its subtree)."""


def act(action: str, collection: str, id, *, by: str, force: bool = False, terminate: bool = False) -> Done:
    """``action`` on the process ``collection``/``id``: see the module docstring."""
    target = load(collection, id)
    refused = actions.refusal(action, target, force=force)
    if refused is not None:
        raise refused
    outcome = actions.apply(action, [target], by=by, terminate=terminate)
    if outcome.missed:
        raise TransitionConflict(f"{collection}/{id} changed while being {actions.VERBS[action]}; look again")
    return Done(outcome.after(target), outcome.stops)


def reset(collection: str, id, *, by: str, force: bool = False) -> Done:
    """Put a stuck or failed process back to READY."""
    return act("reset", collection, id, by=by, force=force)


def redispatch(collection: str, id, *, by: str, force: bool = False) -> Done:
    """Send a stuck or failed process again, as a new attempt."""
    return act("redispatch", collection, id, by=by, force=force)


def cancel(collection: str, id, *, by: str, terminate: bool = False) -> Done:
    """End a pending or running process as FAILURE "cancelled", revoking its Celery task, and
    its active children, and theirs. Running code learns of it with its next heartbeat
    (``proc.run.heartbeat``); with ``terminate``, code that has not stopped after
    ``PROC_CANCEL_GRACE`` seconds is terminated where its pool can (``proc.terminate``)."""
    return act("cancel", collection, id, by=by, terminate=terminate)
