"""The broker's bindings of proc's queues, and the removal of the monitor queue's old one.

Invariants:

- ``proc.monitor`` is bound to the direct exchange ``celery`` with its own routing key,
  ``proc.monitor`` (``names.MONITOR_ROUTING_KEY``); ``celery`` keeps key ``celery``. A message
  published to exchange ``celery`` with key ``celery`` (by any tool) reaches ``celery`` only.
- Brokers set up by an earlier proc still bind ``proc.monitor`` with key ``celery`` too
  (Celery declares bindings, it never removes one). ``unbind_legacy`` removes that one
  binding and nothing else; it is idempotent, and every worker runs it once it is ready
  (the ``worker_ready`` handler of ``proc.run.messaging``), after it declared the new
  binding. So the upgrade needs no step of its own: the first upgraded worker does it. A
  worker of the old version started afterwards declares the old binding again, and the
  next upgraded worker to start removes it again.
- How: on RabbitMQ (and every AMQP broker) ``queue_unbind``; on Redis, kombu keeps an
  exchange's bindings in the set ``_kombu.binding.<exchange>`` (members
  ``routing_key SEP pattern SEP queue``) and its ``queue_unbind`` forgets the binding in the
  channel's memory only, so the member is removed from the set (and from kombu's
  ``_kombu.binding_permanent.<exchange>``) directly, under the transport's
  ``global_keyprefix``.
"""
from __future__ import annotations

import logging

from kombu import Exchange, Queue

from ..names import DEFAULT_QUEUE, EXCHANGE, LEGACY_MONITOR_ROUTING_KEY, MONITOR_QUEUE, MONITOR_ROUTING_KEY
from ..redact import redact_text

log = logging.getLogger(__name__)


def task_queues() -> tuple[Queue, Queue]:
    """proc's two queues with their bindings (Celery's ``task_queues``)."""
    exchange = Exchange(EXCHANGE, type="direct")
    return (Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE),
            Queue(MONITOR_QUEUE, exchange, routing_key=MONITOR_ROUTING_KEY))


def unbind_legacy(app) -> bool:
    """Remove the binding of ``proc.monitor`` with key ``celery`` from ``app``'s broker.

    Returns True if the broker held it (Redis tells; on AMQP the unbind of a binding that
    is not there succeeds silently, so it returns True whenever the unbind was accepted).
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        keyprefix = getattr(channel, "keyprefix_queue", None)
        if keyprefix is None:  # AMQP
            channel.queue_unbind(queue=MONITOR_QUEUE, exchange=EXCHANGE, routing_key=LEGACY_MONITOR_ROUTING_KEY)
            return True
        member = channel.sep.join([LEGACY_MONITOR_ROUTING_KEY, "", MONITOR_QUEUE])
        with channel.conn_or_acquire() as client:
            removed = client.srem(keyprefix % EXCHANGE, member)
            client.srem(channel.keyprefix_binding_permanent % EXCHANGE, member)
        return bool(removed)


def unbind_legacy_on_ready(sender=None, **_) -> None:
    """``worker_ready`` handler: ``unbind_legacy`` of the worker's app; a broker that refuses
    is logged, never fatal (the old binding only duplicates foreign messages)."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    try:
        if unbind_legacy(app):
            log.info("removed the old binding of queue %s (routing key %s) from exchange %s",
                     MONITOR_QUEUE, LEGACY_MONITOR_ROUTING_KEY, EXCHANGE)
    except Exception as exc:  # kombu/redis/amqp raise many kinds
        log.warning("could not remove the old binding of queue %s (routing key %s): %s",
                    MONITOR_QUEUE, LEGACY_MONITOR_ROUTING_KEY, redact_text(f"{type(exc).__name__}: {exc}"))
