"""A worker that cannot reach the database stops taking messages until it can again.

A worker cut off from MongoDB but not from the broker would go on taking ``proc.run``
messages whose claims it cannot write. So when a claim fails for want of the database
(``ClaimNotWritten``, after ``PROC_DB_OUTAGE_TIMEOUT``), the worker's main process, in the
order that keeps the message from coming back to it:

1. stops consuming every queue it consumes (``pause``; kombu's ``cancel_by_queue``, run in
   the worker's event loop; a message a waiting read still brings is given back to the
   broker by kombu);
2. publishes the message again, unchanged (same task id, same attempt), for a worker that
   can reach the database (``hand_back``); nothing ran;
3. asks the database every ``RETRY_INTERVAL`` seconds (a ``ping``) and consumes again once
   it answers (``resume``).

Messages it had already reserved run as usual: each claim fails the same way and is handed
back. When the database is down for every worker, every worker pauses and the messages wait
in the broker; the workers resume as soon as it answers. A message that cannot be published
again (the broker is away too) is logged; the monitor's queue timeout sends the process again.
"""
from __future__ import annotations

import logging
import threading

from ..exceptions import ConfigurationError
from ..names import RUN_TASK
from ..store import db
from . import messaging, prefetch

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0
"""Seconds between two pings of the database by a paused worker."""

_paused: dict[str, list] = {}  # node name -> the kombu queues it stopped consuming
_lock = threading.Lock()


def paused(hostname: str) -> bool:
    with _lock:
        return hostname in _paused


def hand_back(request, reason: BaseException) -> None:
    """``request`` (a ``proc.run`` whose claim was not written) goes back to the broker; its
    worker pauses first and resumes when the database answers. Called in the main process."""
    hostname = request.hostname
    pause(hostname, reason)  # first: the message must not come back to this worker
    app = request.task.app
    queue = (request.delivery_info or {}).get("routing_key") or None
    try:
        messaging.send_task(app, RUN_TASK, messaging.publish_timeout(app), args=list(request.args), kwargs=dict(request.kwargs or {}),
                            task_id=request.id, queue=queue)
    except Exception as exc:  # the broker is away too: the monitor's queue timeout covers it
        log.error("%s could not publish the message of %s again (%s: %s); the monitor sends the "
                  "process again after its queue timeout", hostname, request.id, type(exc).__name__, exc)
    else:
        log.warning("%s handed the message of %s back to the broker for a worker that can reach "
                    "the database", hostname, request.id)


def pause(hostname: str, reason: BaseException) -> bool:
    """Stop worker ``hostname`` consuming, until the database answers it. Returns whether it
    paused now (False: already paused, or no consumer known)."""
    consumer = prefetch.consumer_of(hostname)
    if consumer is None or getattr(consumer, "task_consumer", None) is None:
        return False
    with _lock:
        if hostname in _paused:
            return False
        _paused[hostname] = []
    done = threading.Event()

    def cancel():
        try:
            queues = list(consumer.task_consumer.queues)
            for queue in queues:
                consumer.task_consumer.cancel_by_queue(queue.name)
            with _lock:
                _paused[hostname] = queues
        finally:
            done.set()

    _in_loop(consumer, cancel)
    if not done.wait(10):
        log.error("%s: its event loop did not stop consuming within 10 s", hostname)
    log.warning("%s stops taking messages: the database does not answer it (%s); it takes them "
                "again once it does", hostname, reason)
    threading.Thread(target=_watch, args=(hostname, consumer), daemon=True,
                     name=f"proc-intake-{hostname}").start()
    return True


def resume(hostname: str, consumer) -> None:
    """Consume again what ``pause`` stopped."""
    with _lock:
        queues = _paused.pop(hostname, [])

    def add():
        for queue in queues:
            consumer.task_consumer.add_queue(queue)
        consumer.task_consumer.consume()

    if queues:
        _in_loop(consumer, add)
    log.warning("%s takes messages again: the database answers", hostname)


def _watch(hostname: str, consumer) -> None:
    stop = threading.Event()
    while not stop.wait(RETRY_INTERVAL):
        with _lock:
            if hostname not in _paused:
                return
        try:
            db.ping()
        except ConfigurationError:  # not yet
            continue
        resume(hostname, consumer)
        return


def _in_loop(consumer, fn) -> None:
    """Run ``fn`` in the worker's event loop (kombu's channels belong to it): at once when
    called from that loop's thread (a prefork worker's main process, a solo pool) or when the
    worker has no loop, else scheduled on it (a thread pool's thread)."""
    hub = getattr(consumer, "hub", None)
    if hub is None or prefetch.loop_thread_of(consumer) == threading.get_ident():
        fn()
    else:
        hub.call_soon(fn)
