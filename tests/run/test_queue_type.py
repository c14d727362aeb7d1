"""Quorum queues are refused at startup, with the reason and where the upgrade path is."""
from __future__ import annotations

import pytest
from kombu import Exchange, Queue

from proc import startup
from proc.exceptions import ConfigurationError
from proc.run import messaging
from support import make_test_app


@pytest.fixture
def quorum_app():
    app = make_test_app("amqp://guest:guest@127.0.0.1:1//", task_default_queue_type="quorum")
    messaging.set_app(app)
    yield app
    messaging.set_app(None)


def test_classic_queues_pass():
    messaging.check_queue_type(make_test_app("amqp://guest:guest@127.0.0.1:1//"))


def test_a_quorum_default_queue_type_is_refused_with_the_reason_and_the_upgrade_path(quorum_app):
    with pytest.raises(ConfigurationError) as refused:
        messaging.check_queue_type(quorum_app)
    text = str(refused.value)
    assert text.startswith("proc does not support quorum queues yet (task_default_queue_type='quorum')")
    assert "countdown" in text and "delivered 20 times" in text
    assert 'docs/faults.md, "Queue types"' in text


def test_a_queue_declared_as_quorum_is_refused_too():
    app = make_test_app("amqp://guest:guest@127.0.0.1:1//")
    app.conf.task_queues = (Queue("celery", Exchange("celery", type="direct"), routing_key="celery",
                                  queue_arguments={"x-queue-type": "quorum"}),)
    with pytest.raises(ConfigurationError, match=r"quorum queues yet \(x-queue-type 'quorum' on queue celery\)"):
        messaging.check_queue_type(app)


@pytest.mark.real_server
def test_a_worker_refuses_to_start_on_quorum_queues(quorum_app, database_uri):
    from proc import config

    config.configure(mongodb_uri=database_uri)
    with pytest.raises(ConfigurationError, match="proc does not support quorum queues yet"):
        startup.check_worker_can_start()
