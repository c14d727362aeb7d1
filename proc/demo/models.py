"""Demo Proc subclasses (the default ``PROC_MODELS``)."""
from __future__ import annotations

import hashlib
import time

from mongoengine import IntField, ListField, StringField

from proc import Proc, ProcessFailure, process

#: Seconds a demo step takes (the demo sets it so a person can watch; tests set 0).
PACE = {"seconds": 0.0}


def _work(seconds: float | None = None) -> None:
    delay = PACE["seconds"] if seconds is None else seconds
    if delay:
        time.sleep(delay)  # stands in for real work, not synchronisation


class Entry(Proc):
    """One file of an upload, parsed by its own child process."""

    meta = {"collection": "entry"}
    upload_id = StringField(required=True)
    path = StringField(required=True)
    checksum = StringField()

    @process(expected_duration=60)
    def process_entry(self):
        self.set_step(f"parsing {self.path}")
        _work()
        if self.path.endswith(".broken"):
            raise ProcessFailure(f"cannot parse {self.path}: unexpected end of file")
        if self.path.endswith(".partial") and self.attempt <= 1:
            # Still being written when first read: a retry ("Retry all N matching") succeeds.
            raise ProcessFailure(f"cannot parse {self.path}: unexpected end of file (still being written?)")
        self.checksum = hashlib.sha256(self.path.encode()).hexdigest()[:12]
        self.save()


class Upload(Proc):
    """An upload; ``process_upload`` starts one child process per entry."""

    meta = {"collection": "upload"}
    name = StringField(required=True)
    paths = ListField(StringField())
    entries_ok = IntField(default=0)

    @process(join="finish_upload", expected_duration=300, tolerate_child_failures=True)
    def process_upload(self):
        self.set_step(f"creating {len(self.paths)} entries")
        for path in self.paths:
            entry = Entry(upload_id=str(self.pk), path=path)
            entry.save()
            self.spawn(entry.process_entry)
        _work()

    def finish_upload(self):
        self.set_step("collecting entry results")
        self.entries_ok = Entry.objects(upload_id=str(self.pk), process_status="SUCCESS").count()
        self.save()


class Precheck(Proc):
    """One manufacturability precheck of a project; at most 4 run at once."""

    meta = {"collection": "precheck"}
    project_id = StringField(required=True)
    check = StringField(required=True)
    result = StringField()

    @process(limit=4, expected_duration=120, queue_timeout=300)
    def run(self):
        self.set_step(f"running {self.check}")
        _work(PACE["seconds"] * 2)
        self.result = "pass"
        self.save()


class Project(Proc):
    """A project whose ``run_prechecks`` starts 9 prechecks (limit 4) and waits for them."""

    meta = {"collection": "project"}
    name = StringField(required=True)
    checks = ListField(StringField(), default=lambda: [f"check-{i}" for i in range(1, 10)])

    @process(join="summarise")
    def run_prechecks(self):
        for name in self.checks:
            check = Precheck(project_id=str(self.pk), check=name)
            check.save()
            self.spawn(check.run)

    def summarise(self):
        passed = Precheck.objects(project_id=str(self.pk), result="pass").count()
        self.set_step(f"{passed}/{len(self.checks)} prechecks passed")


class Report(Proc):
    """A long report whose steps report progress in a loop: cancel it from its page while
    it runs and watch it stop (its next ``set_step`` raises ``ProcessCancelled``)."""

    meta = {"collection": "report"}
    name = StringField(required=True)
    pages = IntField(default=20)
    pages_done = IntField(default=0)

    @process(expected_duration=600)
    def build(self):
        try:
            for page in range(1, self.pages + 1):
                self.set_step(f"page {page}/{self.pages} (cancel me from the page)")
                _work()
                self.pages_done = page
        finally:  # runs after a cancel too
            self.save()
