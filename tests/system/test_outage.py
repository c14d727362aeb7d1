"""Short database outages: the writes a process's outcome depends on are retried, a lost
reply is recognised, progress writes never end a process, callers get a clear error.

The faults are injected at the driver boundary: a collection whose next calls raise
pymongo's own outage errors (after doing the write, for a lost reply), and on the real
server SecantusDB's ``failCommand`` fail point, which closes the connection.
"""
from __future__ import annotations

import uuid

import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

import support
from core_models import Job
from proc import DatabaseUnavailable, config, machine, registry, startup
from proc.run import heartbeat
from proc.store import db
from proc.exceptions import ConfigurationError
from proc.status import ProcessStatus as S


class Flaky:
    """Wraps a pymongo collection: the next ``fail`` calls of ``methods`` raise ``error``,
    after running the real call when ``after=True`` (the reply is lost, the write landed)."""

    def __init__(self, collection, fail, *, after: bool = False, error=AutoReconnect,
                 methods=("update_one", "find_one_and_update")):
        self._collection = collection
        self.budget = fail if isinstance(fail, list) else [fail]
        """Failures left, shared by every wrapper one fault installs."""
        self.after = after
        self.error = error
        self.methods = methods
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name not in self.methods:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.budget[0] <= 0:
                return attr(*args, **kwargs)
            self.budget[0] -= 1
            if self.after:
                attr(*args, **kwargs)
            raise self.error("connection closed (injected)")

        return call


@pytest.fixture
def flaky(monkeypatch):
    made = []

    def install(fail: int, **options) -> list:
        original = db.status_collection
        budget = [fail]

        def status_collection(collection):
            wrapped = Flaky(original(collection), budget, **options)
            made.append(wrapped)
            return wrapped

        monkeypatch.setattr(db, "status_collection", status_collection)
        return made

    config.configure(db_outage_timeout=5)
    return install


def pending_job() -> tuple[Job, object]:
    job = Job(label="outage")
    job.save()
    coll = Job._get_collection()
    machine.transition(machine.Attempt(coll.name, job.pk, 0), "request", machine.Change(fields={"current_process": "noop"}))
    return job, coll


def test_a_durable_write_is_retried_through_an_outage_and_lands_once(flaky):
    job, coll = pending_job()
    seen = []
    machine.listeners.append(seen.append)
    made = flaky(2)
    after = machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", machine.Change(host="w"), fetch=True, durable=True)
    assert after["process_status"] == "RUNNING"
    assert made[-1].calls == 3
    stored = coll.find_one({"_id": job.pk})
    assert [h["event"] for h in stored["history"]] == ["request", "claim"]
    assert [t.event for t in seen] == ["claim"]


@pytest.mark.parametrize("fetch", [True, False])
def test_a_lost_reply_is_recognised_as_its_own_landed_write_not_as_superseded(flaky, fetch):
    job, coll = pending_job()
    seen = []
    machine.listeners.append(seen.append)
    flaky(1, after=True)  # the write lands, its reply is lost
    after = machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", machine.Change(host="w"), fetch=fetch, durable=True)
    assert after is not None and after["process_status"] == "RUNNING" and after["attempt"] == 1
    stored = coll.find_one({"_id": job.pk})
    assert [h["event"] for h in stored["history"]] == ["request", "claim"]  # written once
    assert [(t.event, t.source) for t in seen] == [("claim", S.PENDING)]
    if fetch:
        assert after == stored


def test_a_retried_write_that_did_not_land_and_was_overtaken_reports_superseded(flaky):
    job, coll = pending_job()
    made = flaky(1, methods=("find_one_and_update",))
    # Meanwhile another writer (the monitor) moved the process on.
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "fail", machine.Change(errors=["cancelled"], by="admin"))
    assert machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", fetch=True, durable=True) is None
    assert made[-1].calls == 2
    assert coll.find_one({"_id": job.pk})["process_status"] == "FAILURE"


def test_an_outage_longer_than_the_timeout_raises_database_unavailable_naming_the_uri(flaky):
    job, coll = pending_job()
    config.configure(db_outage_timeout=0.5)
    flaky(10**6, error=ServerSelectionTimeoutError)
    with pytest.raises(DatabaseUnavailable) as raised:
        machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", durable=True)
    assert "MONGODB_URI=" in str(raised.value) and "ServerSelectionTimeoutError" in str(raised.value)
    assert coll.find_one({"_id": job.pk})["process_status"] == "PENDING"


def test_a_write_that_is_not_durable_fails_at_once(flaky):
    job, coll = pending_job()
    made = flaky(1)
    with pytest.raises(AutoReconnect):
        machine.update_fields(machine.Attempt(coll.name, job.pk, 1), statuses=[S.PENDING], fields={"x": 1})
    assert made[-1].calls == 1


def test_a_failed_heartbeat_keeps_the_step_for_the_next_beat_and_never_raises(flaky):
    job, coll = pending_job()
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim")
    flaky(1)
    beat = heartbeat.Beat(machine.Attempt(coll.name, job.pk, 1), interval=0.2, host="w")
    beat.touch("step 7")  # from the method's thread: only hands it over
    beat.write()          # the database is away: logged, the step is kept
    assert beat.failures == 1 and coll.find_one({"_id": job.pk}).get("current_process_step") is None
    beat.write()          # back: the kept step is written
    assert coll.find_one({"_id": job.pk})["current_process_step"] == "step 7" and beat.failures == 0
    beat.write(step="step 8")
    assert beat.take_pending_fields() == {}


def test_the_final_status_write_carries_a_step_no_beat_could_write(flaky):
    job, coll = pending_job()
    machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim")
    flaky(5)
    beat = heartbeat.Beat(machine.Attempt(coll.name, job.pk, 1), interval=60, host="w")
    beat.write(step="last step")
    assert beat.take_pending_fields() == {"current_process_step": "last step"}


def test_the_outage_timeout_must_be_positive_and_below_every_heartbeat_timeout():
    for bad in ("0", "-5", "soon", "nan"):
        with pytest.raises(ConfigurationError, match="PROC_DB_OUTAGE_TIMEOUT"):
            config.Settings.from_env({"PROC_DB_OUTAGE_TIMEOUT": bad})
    config.configure(db_outage_timeout=150)
    with pytest.raises(ConfigurationError) as raised:
        startup.check_outage_timeout([registry.kind_named("test_job.noop")])
    assert "PROC_DB_OUTAGE_TIMEOUT=150 s is not below the heartbeat_timeout of test_job.noop (120 s)" \
        in str(raised.value)
    config.configure(db_outage_timeout=60)
    startup.check_outage_timeout([registry.kind_named("test_job.noop")])


def test_a_caller_whose_database_is_away_gets_database_unavailable_and_nothing_is_written(monkeypatch):
    job = Job(label="caller")
    job.save()
    before = Job._get_collection().find_one({"_id": job.pk})
    budget = [1]
    monkeypatch.setattr(db, "status_collection", lambda c: Flaky(c, budget, error=ServerSelectionTimeoutError))
    with pytest.raises(DatabaseUnavailable, match=r"MongoDB at MONGODB_URI=\S+ did not answer while "
                                                  r"calling Job.noop on"):
        job.noop()
    assert Job._get_collection().find_one({"_id": job.pk}) == before


@pytest.mark.real_server
def test_on_the_real_server_a_closed_connection_during_the_claim_is_retried(database, monkeypatch,
                                                                             session_worker):
    # ``failCommand`` is server-wide: without ``appName`` any findAndModify another client sends
    # the run's server meanwhile (a worker or served process another test left running) spends
    # one of the three failures and has its own connection closed, and the claim passes having
    # met fewer of them. Scoped to this test's own client, they reach nothing else; the counter
    # (this thread's commands only) proves the claim met all three. The session's in-process
    # worker shares this process's client (and so its appName): it is stopped first, so that a
    # message an earlier test left with it (a deadline's check coming due, a redispatch it
    # sends) cannot claim anything in the fail point's window. The next test that asks for a
    # worker starts it again.
    session_worker.close()
    app_name = f"proc-outage-{uuid.uuid4().hex[:12]}"
    uri = support.database_uri(database.name)
    uri += ("&" if "?" in uri else "?") + f"appName={app_name}"
    config.configure(mongodb_uri=uri)
    db.connect(uri)
    job, coll = pending_job()
    admin = db.database().client.admin
    counter = support.CommandCounter(monkeypatch)
    admin.command({"configureFailPoint": "failCommand", "mode": {"times": 3},
                   "data": {"failCommands": ["findAndModify"], "closeConnection": True,
                            "appName": app_name}})
    try:
        after = machine.transition(machine.Attempt(coll.name, job.pk, 1), "claim", machine.Change(host="w"), fetch=True, durable=True)
    finally:
        admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert after is not None and after["process_status"] == "RUNNING"
    assert counter.calls.count(("find_one_and_update", coll.name)) == 4  # three closed, then the one that landed
    assert [h["event"] for h in coll.find_one({"_id": job.pk})["history"]] == ["request", "claim"]


def test_the_tier_is_what_the_run_asked_for(database):
    assert support.real_tier() == (not database.client.__class__.__module__.startswith("proc.store.embedded"))


@pytest.mark.real_server
def test_disconnecting_from_a_server_that_is_gone_does_not_wait_for_a_server_selection(tmp_path):
    """Closing a client sends the server its sessions' end (pymongo's ``endSessions``); with the
    server killed, that waited a whole server selection (5 s) in every process and fixture
    that let go of a database that had gone away."""
    import signal
    import time

    own_uri = config.get().mongodb_uri
    server = support.SecantusServer(str(tmp_path / "gone"), test_commands=False).start()
    try:
        db.connect(server.url + "gone")
        Job(label="opens a session").save()
        support.stop(server.process, signal.SIGKILL)
        started = time.monotonic()
        db.disconnect()
        closing = time.monotonic() - started
        assert closing < db.SERVER_SELECTION_TIMEOUT_MS / 1000 / 2, f"closing took {closing:.1f} s"
        db.connect(own_uri)  # the next client works at once
        assert Job.objects.count() == 0
    finally:
        db.connect(own_uri)
        server.cleanup()
