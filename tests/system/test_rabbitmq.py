"""RabbitMQ as the broker: DISPATCHED only after the broker's confirm.

The tests alarm and fill a private ``rabbitmq-server`` node of this module's own
(``support.RabbitMQServer``: own node name, ports, data and config). Body runs are counted
(``fault_models.runs_of``).
"""
from __future__ import annotations

import time

import pytest

import fault_models as fm
from fault_models import Stall
from proc import BrokerUnavailable, monitor
from proc.monitor import stuck
from proc.names import DEFAULT_QUEUE
from proc.run import messaging
from proc.run.inprocess import InProcessWorker
from support import fault_models_app, wait_for

import support  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180),
              pytest.mark.skipif(support.real_tier(), reason="broker faults: the database tier changes "
                                 "nothing here; they run on the embedded tier")]


@pytest.fixture
def rabbit_app(private_rabbitmq):
    with fault_models_app(private_rabbitmq.url, broker_connection_timeout=1) as app:
        yield app
        with app.connection_for_write() as conn:  # the node is the module's: leave its queues empty
            for queue in app.amqp.queues:
                try:
                    conn.default_channel.queue_purge(queue)
                except Exception:
                    pass


def depth(app, queue: str = DEFAULT_QUEUE) -> int:
    with app.connection_for_read() as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def called(n: int, label: str) -> list:
    docs = [Stall(label=f"{label}-{i}") for i in range(n)]
    for doc in docs:
        doc.save()
    return docs


def call_refused(doc) -> BrokerUnavailable:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        doc.work_fail()
    elapsed = time.monotonic() - started
    assert elapsed < 4.0 + 2, f"the refused call took {elapsed:.1f} s (PROC_DISPATCH_TIMEOUT 4 s)"
    doc.reload()
    assert doc.process_status == "PENDING" and doc.attempt == 1
    assert doc.current_process_step.startswith("broker unreachable at amqp://guest:***@127.0.0.1:")
    return raised.value


def sent_by_the_next_sweep_and_run_once(app, docs) -> None:
    """The broker takes messages again: one sweep sends every held process; each is DISPATCHED
    with its message in the queue before any worker runs; then each body runs once."""
    report = monitor.sweep()
    assert {o.stuck.id for o in report.outcomes} >= {d.pk for d in docs}
    for doc in docs:
        doc.reload()
        assert doc.process_status == "DISPATCHED" and doc.attempt == 1, doc.current_process_step
    # At least one message per DISPATCHED process (a publish that timed out may have been taken
    # after all: a second copy of the same attempt, which the claim ignores).
    wait_for(lambda: depth(app) >= len(docs), timeout=10, message=f"{len(docs)} messages in the queue")
    worker = InProcessWorker(app, "a@rabbit").start()
    try:
        for doc in docs:
            wait_for(lambda doc=doc: doc.reload_status().process_status == "SUCCESS", timeout=30,
                     message=f"{doc.label} to run")
        wait_for(lambda: depth(app) == 0, timeout=15, message="every copy to be handled")
    finally:
        worker.stop()
    for doc in docs:
        assert fm.runs_of(doc) == [(1, "a@rabbit")], doc.label
        assert [h["status"] for h in doc.history][-2:] == ["RUNNING", "SUCCESS"]


def test_a_memory_alarm_refuses_calls_and_nothing_is_dispatched_without_a_message(rabbit_app, private_rabbitmq):
    private_rabbitmq.ctl("set_vm_memory_high_watermark", "0.0001")
    try:
        docs = called(2, "alarm")
        for doc in docs:
            error = call_refused(doc)
            assert "did not confirm the message within 1 s (a memory or disk alarm" in str(error)
        # While the alarm lasts, a sweep tries, is refused again, and leaves them PENDING.
        report = monitor.sweep()
        assert {(o.reason, o.action) for o in report.outcomes} == {
            (stuck.BROKER_UNREACHABLE, monitor.Action.STILL_PENDING)}
        assert all(d.reload_status().process_status == "PENDING" for d in docs)
    finally:
        private_rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
    sent_by_the_next_sweep_and_run_once(rabbit_app, docs)


def test_a_queue_that_rejects_publishes_refuses_calls_with_the_reason(rabbit_app, private_rabbitmq):
    with rabbit_app.connection_for_write() as conn:  # the queue exists before the policy is set
        for queue in rabbit_app.amqp.queues.values():
            queue.bind(conn.default_channel).declare()
    private_rabbitmq.ctl("set_policy", "full", f"^{DEFAULT_QUEUE}$",
                     '{"max-length": 0, "overflow": "reject-publish"}', "--apply-to", "queues")
    try:
        wait_for(lambda: _rejects(rabbit_app), timeout=10, message="the policy to apply")
        docs = called(2, "full")
        for doc in docs:
            error = call_refused(doc)
            assert "the broker refused the message (a nack: a queue at its max-length" in str(error)
        assert depth(rabbit_app) == 0
    finally:
        private_rabbitmq.ctl("clear_policy", "full")
    sent_by_the_next_sweep_and_run_once(rabbit_app, docs)


def _rejects(app) -> bool:
    """Whether a publish to the default queue is refused now (the policy applies)."""
    try:
        messaging.send_task(app, "proc.test.probe", 2.0, queue=DEFAULT_QUEUE)
    except Exception:
        return True
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(DEFAULT_QUEUE)
    return False


def test_confirms_are_on_for_amqp_and_off_for_redis():
    from celery import _state

    current = _state.get_current_app()
    try:
        amqp = messaging.make_app(_settings("amqp://guest:guest@rabbit//"))
        redis = messaging.make_app(_settings("redis://r:6379/0"))
    finally:
        current.set_current()
    assert amqp.conf.broker_transport_options["confirm_publish"] is True and messaging.uses_confirms(amqp)
    assert "confirm_publish" not in redis.conf.broker_transport_options and not messaging.uses_confirms(redis)


def _settings(url):
    from proc import config

    return config.Settings(**{**config.get().__dict__, "broker_url": url})
