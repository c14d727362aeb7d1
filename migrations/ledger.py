"""The ledger: one document per datafix recording what happened to it.

``_id`` is the datafix id. ``state`` is ``running``, ``applied``, ``failed`` or
``rolled back``; ``direction`` says whether the last run was an upgrade or a downgrade.
Each run writes its counts and last processed ``_id`` after every batch, so a crash
leaves an accurate record, and appends a summary to ``runs`` when it ends.
"""
from __future__ import annotations

import socket

from proc.timeutil import utcnow

COLLECTION = "datafix_ledger"

RUNNING, APPLIED, FAILED, ROLLED_BACK = "running", "applied", "failed", "rolled back"
STATES = (RUNNING, APPLIED, FAILED, ROLLED_BACK)
#: Runs kept in each entry's ``runs``.
RUNS_KEPT = 20


class Ledger:
    def __init__(self, database):
        self.collection = database[COLLECTION]

    def all(self) -> dict[str, dict]:
        return {doc["_id"]: doc for doc in self.collection.find({})}

    def get(self, revision: str) -> dict | None:
        return self.collection.find_one({"_id": revision})

    def start(self, script, run_id: str, direction: str, previous: dict | None) -> None:
        """Record that ``run_id`` started ``direction`` on ``script`` (state running)."""
        now = utcnow()
        fields = {"description": script.description, "state": RUNNING, "direction": direction,
                  "run_id": run_id, "host": socket.gethostname(), "started_at": now,
                  "finished_at": None, "updated_at": now, "error": None, "last_id": None,
                  "last_collection": None, "counts": {}, "collections": []}
        if not previous or previous.get("state") != APPLIED or not previous.get("checksum"):
            fields["checksum"] = script.checksum
        self.collection.update_one({"_id": script.revision}, {"$set": fields}, upsert=True)

    def progress(self, revision: str, run_id: str, *, counts: dict, collections: list[dict],
                 last_collection: str, last_id) -> None:
        self.collection.update_one(
            {"_id": revision, "run_id": run_id},
            {"$set": {"counts": counts, "collections": collections, "updated_at": utcnow(),
                      "last_collection": last_collection, "last_id": last_id}})

    def finish(self, revision: str, run_id: str, state: str, *, counts: dict,
               collections: list[dict], error: str | None = None) -> None:
        now = utcnow()
        summary = {"run_id": run_id, "state": state, "finished_at": now, "counts": counts,
                   "error": error}
        self.collection.update_one(
            {"_id": revision, "run_id": run_id},
            {"$set": {"state": state, "finished_at": now, "updated_at": now, "error": error,
                      "counts": counts, "collections": collections},
             "$push": {"runs": {"$each": [summary], "$slice": -RUNS_KEPT}}})
