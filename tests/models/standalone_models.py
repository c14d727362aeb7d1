"""A Proc subclass for tests/cli/test_standalone.py: a process that runs until the test lets it
finish, so a test can stop ``procctl standalone`` while it is RUNNING."""
from __future__ import annotations

import os
import time

from mongoengine import StringField

from proc import Proc, ProcessFailure, process


class Hold(Proc):
    meta = {"collection": "standalone_hold"}
    release_path = StringField(required=True)

    @process(expected_duration=120)
    def hold(self):
        self.set_step(f"holding until {self.release_path} exists")
        deadline = time.monotonic() + 120
        while not os.path.exists(self.release_path):  # the test's signal, waited on with a deadline
            if time.monotonic() > deadline:
                raise ProcessFailure(f"{self.release_path} did not appear within 120 s")
            time.sleep(0.05)
        self.set_step("released")
