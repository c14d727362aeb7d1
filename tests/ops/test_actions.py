"""One implementation per operator action (``proc.ops.actions``): a single action from the page
is the batch path with one element, and it costs no more than it did as a path of its own.

- round trips: each single action from the page (``POST /api/procs/<collection>/<id>/<action>``,
  the request's own reads included) sends at most the operations it sent before the actions
  were merged (``CEILING``, counted the same way on each tier);
- real tier: its reads and writes name their document by ``_id`` or lead with an indexed field,
  and it sends none of the shapes SecantusDB serves with a collection scan (``findAndModify``,
  ``_id $in`` beside other conditions: docs/database-tiers.md), so its cost does not grow with
  the collection; the same operations go out for a collection of 10 and of 1,000 documents.
"""
from __future__ import annotations

import threading

import pytest
from pymongo import monitoring

from api_seed import seed
from proc.demo.models import Entry, Precheck, Upload
from proc.status import ProcessStatus as S
from support import CommandCounter, real_tier

PAGE = {"X-Proc-Request": "1"}

#: (name, class, status, seeded fields, URL suffix, whether the request is accepted later (202)).
CASES = {
    "reset a failed limited process": (Precheck, S.FAILURE, {}, "reset", 200),
    "reset a running process, forced": (Upload, S.RUNNING, {}, "reset?force=true", 200),
    "redispatch a failed process": (Entry, S.FAILURE, {}, "redispatch", 200),
    "redispatch a failed limited process": (Precheck, S.FAILURE, {}, "redispatch", 200),
    "redispatch a stuck dispatched process": (Upload, S.DISPATCHED, {}, "redispatch", 200),
    "cancel a running process": (Upload, S.RUNNING, {}, "cancel", 200),
    "cancel with terminate (threads pool)": (Upload, S.RUNNING, {"worker_pool": "threads"},
                                              "cancel?terminate=true", 202),
}

#: Operations each single action sent before the actions were merged (eed9bd1), per tier:
#: (embedded: mongomock method calls, real: commands), as ``support.CommandCounter`` counts them,
#: counted with the demo's five collections registered. A cancel reads every registered
#: collection once for children (the subtree walk): its ceiling grows by one per further one.
CEILING = {
    "reset a failed limited process": (12, 7),
    "reset a running process, forced": (10, 5),
    "redispatch a failed process": (12, 7),
    "redispatch a failed limited process": (18, 12),
    "redispatch a stuck dispatched process": (13, 8),
    "cancel a running process": (17, 11),
    "cancel with terminate (threads pool)": (18, 12),
}


class _Recorder(monitoring.CommandListener):
    """The commands the thread that set ``commands`` sends while it is a list (every client
    made after this module is imported: the real tier's per-test clients). Only that thread's:
    the time buckets' flush thread, heartbeats and the session worker send commands of their own
    meanwhile (one fresh-clone run saw a flush land in the middle of one of the two requests)."""

    commands: list | None = None
    thread: int | None = None

    def record(self) -> list:
        self.thread, self.commands = threading.get_ident(), []
        return self.commands

    def started(self, event):
        if self.commands is not None and threading.get_ident() == self.thread:
            self.commands.append((event.command_name, event.command))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


RECORDER = _Recorder()
monitoring.register(RECORDER)


def act(client, name: str, *, age: float = 7200):
    cls, status, fields, suffix, code = CASES[name]
    pk = seed(cls, status, age=age, **fields)
    return cls, pk, lambda: client.post(f"/api/procs/{cls._get_collection_name()}/{pk}/{suffix}", headers=PAGE), code


@pytest.mark.parametrize("name", list(CASES))
def test_a_single_action_from_the_page_sends_no_more_operations_than_before(client, monkeypatch, name):
    cls, pk, post, code = act(client, name)
    counter = CommandCounter(monkeypatch)
    response = post()
    calls = list(counter.calls)
    monkeypatch.undo()
    assert response.status_code == code, response.get_data(as_text=True)
    from proc import registry

    ceiling = CEILING[name][real_tier()]
    if name.startswith("cancel"):
        ceiling += len({model._get_collection_name() for model in registry.proc_classes()}) - 5
    assert len(calls) <= ceiling, f"{len(calls)} operations, at most {ceiling} before: {calls}"


def _shapes(commands) -> list[tuple]:
    """(command, collection, the filter's field names) of each command, ids left out."""
    from proc.run import checks

    out = []
    for name, command in commands:
        collection = command.get(name)
        if not isinstance(collection, str) or collection == checks.BUCKETS:  # claimed once per bucket
            continue
        if name == "update":
            filters = [u["q"] for u in command["updates"]]
        elif name in ("find", "findAndModify", "delete"):
            filters = [command.get("filter", command.get("query", {}))]
        else:
            filters = [{}]
        out += [(name, collection, tuple(sorted(f))) for f in filters]
    return out


def _leading_index_fields(collection) -> set:
    """The first field of each index but ``_id``'s (whose ``$in`` beside other conditions scans)."""
    return {next(iter(info["key"]))[0] for info in collection.index_information().values()} - {"_id"}


@pytest.mark.real_server
@pytest.mark.parametrize("name", list(CASES))
def test_a_single_action_on_the_real_tier_never_sends_a_scanning_shape_whatever_the_size(client, name):
    from proc import registry

    for model in registry.proc_classes():  # as a deployed service has them: indexes made, no createIndexes
        model.ensure_indexes()
    cls = CASES[name][0]
    coll = cls._get_collection()
    indexed = _leading_index_fields(coll)
    seen = []
    for filler in (10, 1000):
        for name_ in coll.database.list_collection_names():  # the same start for both sizes
            coll.database[name_].delete_many({})
        coll.insert_many([{"process_status": "SUCCESS", "attempt": 1, "history": []} for _ in range(filler)])
        _, pk, post, code = act(client, name)
        RECORDER.record()
        try:
            response = post()
        finally:
            commands, RECORDER.commands = RECORDER.commands, None
        assert response.status_code == code, response.get_data(as_text=True)
        assert any(c == "update" for c, _ in commands), commands  # the request's own writes were seen
        assert not [c for c, _ in commands if c == "findAndModify"], "findAndModify scans on SecantusDB"
        for command, body in commands:
            for q in ([u["q"] for u in body["updates"]] if command == "update" else
                      [body.get("filter")] if command in ("find", "delete") else []):
                if body.get(command) != coll.name or not q:
                    continue
                by_id = "_id" in q and not (isinstance(q["_id"], dict) and "$in" in q["_id"] and len(q) > 1)
                assert by_id or next(iter(q)) in indexed, f"{command} {q} names no document and no index"
        seen.append(_shapes(commands))
    assert sorted(seen[0]) == sorted(seen[1])
