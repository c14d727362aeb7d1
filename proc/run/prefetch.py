"""A worker's prefetch while it runs ``proc.run`` messages it acknowledged at their start.

``proc.run`` is acknowledged when a pool process takes it (``proc.tasks``). The broker counts
only unacknowledged messages against a consumer's prefetch (``worker_prefetch_multiplier`` x
concurrency), so without this module a worker whose pool processes all run long processes
would take that many more messages and hold them, unacknowledged, until a pool process frees:
work another worker could do meanwhile, and on RabbitMQ messages that meet
``consumer_timeout`` (the channel closed, the worker exiting with ``PreconditionFailed``).

So a worker lowers its prefetch by one for each ``proc.run`` running acknowledged, and raises
it again when that run ends, never below 1 (0 means "no limit" to the broker): a worker whose
pool processes are all busy holds at most one message it cannot start yet. The change goes
through Celery's own ``QoS`` of the consumer (``decrement_eventually``/``increment_eventually``,
applied by the worker's event loop, as Celery does for messages with an ETA), and is counted
on that ``QoS`` object, so a reconnection (a new one, at the full prefetch) starts afresh.

``strategy`` is the ``proc.run`` task's Celery strategy (``proc.tasks``): it remembers the
consumer of each worker (by node name) and the thread of its event loop (``proc.run.intake``
uses both); the task's request (``proc.run.request``) says when a run starts and ends.
"""
from __future__ import annotations

import logging
import threading

from celery.worker.strategy import default

log = logging.getLogger(__name__)

_consumers: dict[str, object] = {}
_loop_threads: dict[int, int] = {}  # id(consumer) -> the thread that runs its event loop
_running: dict[str, set[str]] = {}
_lock = threading.Lock()


def strategy(task, app, consumer, **kwargs):
    """Celery's default strategy for ``proc.run``, remembering ``consumer`` by node name."""
    with _lock:
        _consumers[consumer.hostname] = consumer
        _loop_threads[id(consumer)] = threading.get_ident()  # strategies are made in the loop's thread
    return default(task, app, consumer, **kwargs)


def consumer_of(hostname: str):
    """The Celery consumer of worker ``hostname`` in this process, if it runs ``proc.run``."""
    with _lock:
        return _consumers.get(hostname)


def loop_thread_of(consumer) -> int | None:
    with _lock:
        return _loop_threads.get(id(consumer))


def _adjust(hostname: str | None, task_id: str, running: bool) -> None:
    with _lock:
        consumer = _consumers.get(hostname or "")
        ids = _running.setdefault(hostname or "", set())
        if running:
            ids.add(task_id)
        else:
            ids.discard(task_id)
        qos = getattr(consumer, "qos", None)
        base = getattr(consumer, "initial_prefetch_count", 0) or 0
        if qos is None or base <= 1:
            return
        target = min(len(ids), base - 1)
        applied = getattr(qos, "_proc_lowered_by", 0)
        if target > applied:
            qos.decrement_eventually(target - applied)
        elif target < applied:
            qos.increment_eventually(applied - target)
        qos._proc_lowered_by = target


def running_count(hostname: str) -> int:
    """How many ``proc.run`` of worker ``hostname`` run acknowledged now (tests)."""
    with _lock:
        return len(_running.get(hostname, ()))


def started(hostname: str | None, task_id: str) -> None:
    """A ``proc.run`` acknowledged at its start began on worker ``hostname``: one less to prefetch."""
    try:
        _adjust(hostname, task_id, True)
    except Exception:  # the prefetch stays as it was: more messages held, nothing lost
        log.exception("could not lower the prefetch of %s", hostname)


def ended(hostname: str | None, task_id: str) -> None:
    """That run ended: the prefetch goes back up."""
    try:
        _adjust(hostname, task_id, False)
    except Exception:
        log.exception("could not raise the prefetch of %s again", hostname)
