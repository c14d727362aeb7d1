"""Seeded processes and credentials for the API, page and schemathesis tests (the Flask test
app: ``support.make_flask_app``).

Seeding writes documents straight into the database (as another process's transitions
would land there), so every status, age and field can be set exactly.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from proc.demo.models import Entry, Precheck, Project, Upload
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

TOKEN = "t0ken-for-tests-0123456789abcdefghij"

REQUIRED = {
    Precheck: lambda i: {"project_id": "p1", "check": f"check-{i}"},
    Upload: lambda i: {"name": f"upload-{i}"},
    Entry: lambda i: {"upload_id": "u1", "path": f"file-{i}.txt"},
    Project: lambda i: {"name": f"project-{i}"},
}
METHOD = {Precheck: "run", Upload: "process_upload", Entry: "process_entry", Project: "run_prechecks"}


def seed(cls, status, *, age: float = 1.0, method: str | None = None, **fields):
    """A ``cls`` document in ``status`` for ``age`` seconds; returns its id."""
    status = S(status).value
    doc = cls(**REQUIRED[cls](uuid.uuid4().hex[:6]))
    doc.save()
    now = utcnow()
    when = now - timedelta(seconds=age)
    started = status != S.READY.value
    raw = {"process_status": status, "last_status_change": when,
           "current_process": (method or METHOD[cls]) if started else None,
           "attempt": 1 if started else 0,
           "celery_task_id": str(uuid.uuid4()) if started else None,
           "history": [{"status": status, "event": "seeded", "time": when, "attempt": 1 if started else 0,
                        "host": "seed-host", "note": "seeded by the test"}] if started else []}
    if status in (S.RUNNING.value, S.WAITING_FOR_RESULT.value):
        raw.update(worker_hostname="celery@seed-host", heartbeat=now, deadline=now + timedelta(hours=1))
    if status in (S.SUCCESS.value, S.FAILURE.value):
        raw["complete_time"] = when
    raw.update(fields)
    cls._get_collection().update_one({"_id": doc.pk}, {"$set": raw})
    return doc.pk


def seed_every_status() -> dict:
    """Two prechecks per status (one upload, too) : returns the expected counts."""
    expected = {}
    for status in S:
        for _ in range(2):
            seed(Precheck, status, age=30)
        seed(Upload, status, age=5)
        expected[status.value] = 3
    return expected


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str = "alice", password: str = TOKEN) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
