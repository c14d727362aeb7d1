"""The monitor queue's own routing key, and the removal of its old binding (``proc.run.bindings``),
on a real Redis and on RabbitMQ (a virtual host of its own on the run's private rabbitmq-server,
or CELERY_BROKER_URL when it names an AMQP broker; missing, a failure with CI=true)."""
from __future__ import annotations

import pytest
from kombu import Producer

from proc.names import DEFAULT_QUEUE, EXCHANGE, MONITOR_QUEUE, SWEEP_TASK
from proc.run import bindings
from support import free_port, make_test_app, wait_for

pytestmark = pytest.mark.broker

LEGACY_MEMBER = b"celery\x06\x16\x06\x16proc.monitor"


def declare_as_before(app) -> None:
    """The broker as an earlier proc left it: both queues, and proc.monitor also bound with key celery."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue.bind(channel).declare()
        channel.queue_bind(MONITOR_QUEUE, exchange=EXCHANGE, routing_key="celery")


def depths(app) -> dict[str, int]:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        passive = not hasattr(channel, "keyprefix_queue")  # a Redis declare only counts
        return {q: channel.queue_declare(queue=q, passive=passive).message_count
                for q in (DEFAULT_QUEUE, MONITOR_QUEUE)}


def publish_foreign(app) -> None:
    """What another tool does: a message to exchange celery with routing key celery."""
    with app.connection_for_write() as conn:
        Producer(conn.default_channel).publish({"from": "another tool"}, exchange=EXCHANGE,
                                               routing_key="celery", declare=[])


def redis_bindings(app) -> set[bytes]:
    with app.connection_for_read() as conn:
        return set(conn.default_channel.client.smembers(f"_kombu.binding.{EXCHANGE}"))


@pytest.fixture
def redis_app(redis_url):
    app = make_test_app(redis_url)
    yield app
    with app.connection_for_write() as conn:
        for queue in (DEFAULT_QUEUE, MONITOR_QUEUE):
            conn.default_channel.queue_delete(queue)
        conn.default_channel.client.delete(f"_kombu.binding.{EXCHANGE}")
    app.close()


def test_a_message_to_exchange_celery_with_key_celery_reaches_the_default_queue_only(redis_app):
    with redis_app.connection_for_write() as conn:
        for queue in redis_app.amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    publish_foreign(redis_app)
    assert depths(redis_app) == {DEFAULT_QUEUE: 1, MONITOR_QUEUE: 0}
    redis_app.send_task(SWEEP_TASK, queue=MONITOR_QUEUE)  # proc's own monitor messages still arrive
    assert depths(redis_app) == {DEFAULT_QUEUE: 1, MONITOR_QUEUE: 1}
    assert LEGACY_MEMBER not in redis_bindings(redis_app)


def test_the_old_binding_is_removed_from_redis_once_and_only_it(redis_app):
    declare_as_before(redis_app)
    assert LEGACY_MEMBER in redis_bindings(redis_app)
    publish_foreign(redis_app)
    assert depths(redis_app) == {DEFAULT_QUEUE: 1, MONITOR_QUEUE: 1}  # the duplicate of the issue

    assert bindings.unbind_legacy(redis_app) is True
    assert bindings.unbind_legacy(redis_app) is False  # idempotent
    assert redis_bindings(redis_app) == {b"celery\x06\x16\x06\x16celery",
                                         b"proc.monitor\x06\x16\x06\x16proc.monitor"}
    publish_foreign(redis_app)
    assert depths(redis_app) == {DEFAULT_QUEUE: 2, MONITOR_QUEUE: 1}


def test_a_broker_that_refuses_the_unbind_is_logged_not_fatal(caplog):
    app = make_test_app(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there

    class Consumer:
        pass

    consumer = Consumer()
    consumer.app = app
    bindings.unbind_legacy_on_ready(sender=consumer)
    assert "could not remove the old binding of queue proc.monitor (routing key celery)" in caplog.text


# -- RabbitMQ -------------------------------------------------------------------------------------


def test_the_old_binding_is_removed_from_rabbitmq_and_foreign_messages_reach_the_default_queue_only(rabbitmq_url):
    app = make_test_app(rabbitmq_url)
    try:
        declare_as_before(app)
        publish_foreign(app)
        assert wait_depths(app, {DEFAULT_QUEUE: 1, MONITOR_QUEUE: 1})  # the duplicate of the issue
        bindings.unbind_legacy(app)
        bindings.unbind_legacy(app)  # idempotent: RabbitMQ accepts the unbind of a missing binding
        publish_foreign(app)
        assert wait_depths(app, {DEFAULT_QUEUE: 2, MONITOR_QUEUE: 1})
        app.send_task(SWEEP_TASK, queue=MONITOR_QUEUE)
        assert wait_depths(app, {DEFAULT_QUEUE: 2, MONITOR_QUEUE: 2})
    finally:
        app.close()


def wait_depths(app, expected: dict) -> bool:
    """RabbitMQ counts a published message a moment after the publish returns."""
    wait_for(lambda: depths(app) == expected, timeout=10, message=f"queue depths {expected}")
    return True
