"""Size caps (``proc.store.caps``): every message written is at most 8 KiB, a call's arguments at most
64 KiB, and an ending write the database refuses for size still ends the attempt FAILURE.
Both tiers: the embedded database refuses a document over 16 MiB as a real server does."""
from __future__ import annotations

import pytest

from caps_models import Chatty
from proc import machine, monitor
from proc.store import caps
from proc.monitor import stuck
from proc.machine import Attempt, Change
from proc.status import ProcessStatus as S
from proc.timeutil import utcnow

MB = 1024 * 1024
SUFFIX = f"... ({9 * MB - caps.MESSAGE_CHARS} more characters)"


def raw(pk):
    return Chatty._get_collection().find_one({"_id": pk})


def test_a_9_mb_exception_ends_failure_with_the_capped_message_and_the_monitor_leaves_it(worker, client):
    doc = Chatty()
    doc.save()
    doc.shout(9 * MB, step_size=9 * MB, warn_size=9 * MB)
    doc.block_until_complete(60)
    stored = raw(doc.pk)
    assert stored["process_status"] == "FAILURE"
    error = stored["errors"][-1]
    assert error.startswith("ValueError: xxx") and error.endswith(SUFFIX.replace(str(9 * MB - caps.MESSAGE_CHARS),
                                                                                 str(9 * MB + 12 - caps.MESSAGE_CHARS)))
    assert len(error) < caps.MESSAGE_CHARS + 50
    assert stored["warnings"] == ["w" * caps.MESSAGE_CHARS + SUFFIX]
    assert stored["current_process_step"] == "s" * caps.MESSAGE_CHARS + SUFFIX
    # Ended, not stuck: the monitor, even an hour later, blames nothing on it.
    later = utcnow().replace(year=utcnow().year + 1)
    assert [s for s in stuck.find(later) if s.id == doc.pk] == []
    monitor.sweep(later)
    assert raw(doc.pk)["process_status"] == "FAILURE" and raw(doc.pk)["attempt"] == 1
    # A list row stays small.
    row = client.get("/api/procs?kind=test_chatty").get_data()
    assert len(row) < 3 * caps.MESSAGE_CHARS


def test_every_writer_caps_steps_warnings_errors_and_notes():
    doc = Chatty()
    doc.save()
    big = "y" * (caps.MESSAGE_CHARS + 5)
    capped = "y" * caps.MESSAGE_CHARS + "... (5 more characters)"
    attempt = Attempt("test_chatty", doc.pk, 0)
    machine.transition(attempt, "request", Change(fields={"current_process": "quiet", "current_process_step": big},
                                                  note=big, by=big))
    attempt = attempt.with_number(1)
    machine.update_fields(attempt, statuses=[S.PENDING], fields={"current_process_step": big},
                          warnings=[big], errors=[big])
    machine.transition(attempt, "fail", Change(errors=[big], warnings=[big], note=big))
    stored = raw(doc.pk)
    assert stored["current_process_step"] == capped
    assert stored["errors"] == [capped, capped] and stored["warnings"] == [capped, capped]
    assert [(h.get("note"), h.get("by")) for h in stored["history"]] == [(capped, capped), (capped, None)]
    assert caps.message(12) == "12" and caps.message("short") == "short"


def test_a_failure_with_more_messages_than_are_kept_sends_only_the_newest_capped():
    doc = Chatty()
    doc.save()
    attempt = Attempt("test_chatty", doc.pk, 0)
    machine.transition(attempt, "request", Change(fields={"current_process": "quiet"}))
    errors = [f"{i}:" + "e" * caps.MESSAGE_CHARS for i in range(300)]  # 2.4 MB of errors
    change = Change(errors=errors)
    update = machine.write_of(machine.rule("fail"), attempt.with_number(1), change, utcnow()).update
    assert len(update["$push"]["errors"]["$each"]) == 100  # the write carries only what is kept
    machine.transition(attempt.with_number(1), "fail", change)
    stored = raw(doc.pk)["errors"]
    assert len(stored) == 100 and stored[0].startswith("200:") and stored[-1].startswith("299:")
    assert all(len(e) < caps.MESSAGE_CHARS + 40 for e in stored)


def test_arguments_over_64_kib_are_refused_at_the_call_and_nothing_is_written(app):
    doc = Chatty()
    doc.save()
    with pytest.raises(caps.ArgumentsTooLarge, match=r"over the limit of 65,536 \(proc.store.caps.ARGS_BYTES\)"):
        doc.quiet("z" * caps.ARGS_BYTES)
    with pytest.raises(caps.ArgumentsTooLarge, match="65,536"):
        doc.quiet(data={"rows": ["z" * 1000] * 70})
    stored = raw(doc.pk)
    assert stored["process_status"] == "READY" and stored["history"] == [] and stored["process_args"] == {}


def test_an_ending_write_refused_for_size_ends_failure_with_a_short_error(worker):
    """The document is near 16 MiB (its own fields): the final write, with its 8 KiB error,
    would pass the limit; the attempt still ends FAILURE, saying why."""
    doc = Chatty()
    doc.save()
    Chatty._get_collection().update_one({"_id": doc.pk}, {"$set": {"padding": "p" * (caps.DOCUMENT_BYTES - 6000)}})
    doc.reload()
    doc.shout(caps.MESSAGE_CHARS)
    doc.block_until_complete(60)
    stored = raw(doc.pk)
    assert stored["process_status"] == "FAILURE", stored["process_status"]
    [error] = stored["errors"]
    assert error.startswith("the database refused the end of this attempt: the document would exceed 16 MiB")
    assert "The method ended with: ValueError: xxx" in error and len(error) < 1000
    assert stored["history"][-1]["note"] == "ended FAILURE: document too large"


def test_the_embedded_database_refuses_a_document_over_16_mib_as_a_server_does(database):
    from pymongo.errors import OperationFailure

    coll = database["test_sizes"]
    coll.insert_one({"_id": 1, "a": "x" * (caps.DOCUMENT_BYTES - 100)})
    with pytest.raises(OperationFailure) as refused:
        coll.update_one({"_id": 1}, {"$set": {"b": "y" * 200}})
    assert caps.too_large(refused.value)
    with pytest.raises(OperationFailure) as refused:
        coll.insert_one({"_id": 2, "a": "x" * (caps.DOCUMENT_BYTES + 1)})
    assert caps.too_large(refused.value)
    assert coll.count_documents({}) == 1 and "b" not in coll.find_one({"_id": 1})


def test_every_form_of_the_size_refusal_is_recognised_and_nothing_else():
    from pymongo.errors import DocumentTooLarge, OperationFailure, WriteError

    assert caps.too_large(DocumentTooLarge("'update' command document too large"))
    assert caps.too_large(WriteError("Resulting document after update is larger than 16777216", 17419))
    assert caps.too_large(OperationFailure("BSONObj size ... is invalid", 10334))
    assert caps.too_large(OperationFailure("too big", 2, {"codeName": "BSONObjectTooLarge"}))
    assert not caps.too_large(WriteError("duplicate key", 11000))
    assert not caps.too_large(ValueError("too large"))
