"""A broker that is down when a process is called: bounded wait, clear error, nothing lost."""
from __future__ import annotations

import logging
import time

import pytest

from support import make_test_app
from core_models import Job
from proc import BrokerUnavailable
from proc.run import messaging
from support import free_port

SECRET = "s3cret-pw"


@pytest.fixture
def dead_broker_app():
    app = make_test_app(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")  # nothing listens there
    messaging.set_app(app)
    yield app
    messaging.set_app(None)
    app.close()


def test_broker_down_at_dispatch_fails_fast_and_keeps_the_process_pending(dead_broker_app, caplog):
    caplog.set_level(logging.DEBUG)
    job = Job()
    job.save()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        job.noop()
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"dispatch took {elapsed:.1f} s with the broker down"
    message = str(raised.value)
    assert "broker unreachable at redis://:***@127.0.0.1:" in message
    assert "stays PENDING" in message
    job.reload()
    assert job.process_status == "PENDING"
    assert job.current_process == "noop" and job.attempt == 1
    assert job.current_process_step.startswith("broker unreachable at redis://:***@")
    assert job.errors == [] and [h["status"] for h in job.history] == ["PENDING"]
    assert SECRET not in message and SECRET not in job.current_process_step
    assert SECRET not in caplog.text


def test_a_process_left_pending_by_a_dead_broker_is_sent_once_the_broker_is_back(
        app, worker, dead_broker_app):
    from proc.ops import admin

    job = Job()
    job.save()
    with pytest.raises(BrokerUnavailable):
        job.add(5)
    messaging.set_app(app)  # the broker is back (the monitor does this on its own; see test_faults)
    admin.redispatch("test_job", job.pk, by="test", force=True)
    job.block_until_complete(20)
    assert job.process_status == "SUCCESS" and job.value == 5 and job.attempt == 2
