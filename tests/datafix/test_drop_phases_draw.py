"""Datafix 0004: ``phases_draw`` (written on every ending before the time buckets) removed, so
documents of that version load again and the startup guard lets workers and servers start."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from mongoengine.errors import FieldDoesNotExist

from migrations import guard
from proc.cli import cli
from proc.exceptions import ConfigurationError
from proc.timeutil import utcnow
from timing_models import Napper


def ended_by_the_previous_version(n: int) -> list:
    end = utcnow()
    return Napper._get_collection().insert_many([
        {"process_status": "SUCCESS", "current_process": "nap", "attempt": 1, "complete_time": end,
         "last_status_change": end, "phases": {"run": 1.0}, "phases_draw": 0.25 + i / 100}
        for i in range(n)]).inserted_ids


def test_the_field_is_removed_the_rest_kept_and_the_documents_load_again(database):
    ids = ended_by_the_previous_version(3)
    kept = Napper._get_collection().insert_one({"process_status": "READY", "current_process": "nap"}).inserted_id
    with pytest.raises(FieldDoesNotExist):
        Napper.objects.get(id=ids[0])
    with pytest.raises(ConfigurationError, match=r"datafix 0004, .* `procctl datafix upgrade`"):
        guard.refuse_if_legacy("the worker")

    dry = CliRunner().invoke(cli, ["datafix", "upgrade", "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0 and "phases_draw removed" in dry.output, dry.output
    assert Napper._get_collection().count_documents({"phases_draw": {"$exists": True}}) == 3

    result = CliRunner().invoke(cli, ["datafix", "upgrade", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert Napper._get_collection().count_documents({"phases_draw": {"$exists": True}}) == 0
    loaded = Napper.objects.get(id=ids[0])
    assert loaded.process_status == "SUCCESS" and loaded.phases == {"run": 1.0} and loaded.attempt == 1
    assert Napper.objects.get(id=kept).process_status == "READY"
    guard.refuse_if_legacy("the worker")  # starts
