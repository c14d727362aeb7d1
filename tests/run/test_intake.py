"""A worker whose claim cannot be written for want of the database stops consuming, hands the
message back to the broker and consumes again once the database answers (``proc.run.intake``).

Real: a SecantusDB server of the test's own, stopped and started again with its data; a private
redis-server, or a virtual host of the run's rabbitmq-server; an in-process worker (thread pool: the hand-back runs in a pool thread and the
pause in the worker's event loop). The prefork worker on another host is
``tests/system/test_hosts.py``.
"""
from __future__ import annotations

import logging

import pytest

import fault_models as fm
from fault_models import Stall
from proc import config, registry
from proc.run import intake
from proc.run.inprocess import InProcessWorker
from proc.store import db
from support import SecantusServer, fault_models_app, require_real_server, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_claim_the_database_does_not_answer_is_handed_back_and_run_once_it_answers(broker, request, caplog):
    require_real_server("stops a database server of its own")
    broker_url = request.getfixturevalue("private_redis").url if broker == "redis" else \
        request.getfixturevalue("rabbitmq_url")
    caplog.set_level(logging.INFO)
    server = SecantusServer().start()
    worker = None
    try:
        uri = server.url + "intake"
        # 10 min: the monitor's check must not be what sends it again
        config.configure(mongodb_uri=uri, db_outage_timeout=1.0, db_socket_timeout=1.0,
                         kind_settings={"fault_stall.work_retry": {"queue_timeout": 600, "expected_duration": 600}})
        registry.forget_settings()
        db.connect(uri)
        with fault_models_app(broker_url) as app:
            job = Stall(label="intake")
            job.save()
            job.work_retry()  # DISPATCHED: the message waits in the broker, no worker yet
            server.stop()
            worker = InProcessWorker(app, "a@intake").start()
            wait_for(lambda: "handed the message of" in caplog.text, timeout=30,
                     message="the worker to hand the message back")
            assert intake.paused("a@intake")
            assert "a@intake stops taking messages: the database does not answer it" in caplog.text
            assert fm.runs_of(job) == []  # nothing ran
            server.start()
            wait_for(lambda: not intake.paused("a@intake"), timeout=30, message="the worker to consume again")
            wait_for(lambda: job.reload_status().process_status == "SUCCESS", timeout=30,
                     message="the handed-back message to run once the database answers")
            assert job.attempt == 1 and fm.runs_of(job) == [(1, "a@intake")]
            assert caplog.text.count("handed the message of") == 1
    finally:
        if worker is not None:
            worker.stop()
        server.cleanup()
