"""The datafix framework's tests and datafix 0001's run against proc's sequence as it was when
they were written: 0001 alone (a copy of the shipped file). proc's later datafixes, each
tested in a file of its own (``FULL_SEQUENCE``), see the whole shipped sequence."""
from __future__ import annotations

import shutil

import pytest

from migrations import script

FULL_SEQUENCE = {"test_backfill.py", "test_drop_phases_draw.py"}


@pytest.fixture(autouse=True)
def procs_sequence_of_0001_alone(request, tmp_path_factory, monkeypatch):
    if request.path.name in FULL_SEQUENCE:
        yield
        return
    own = tmp_path_factory.mktemp("proc-versions")
    shutil.copy(script.VERSIONS_DIR / "0001_tasks_to_process_status.py", own)
    monkeypatch.setattr(script, "VERSIONS_DIR", own)
    yield
