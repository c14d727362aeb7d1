"""The ledger: one document per datafix recording what happened to it.

``_id`` is the datafix's label (``0001`` for proc's own sequence, ``myapp:0001`` for an
application's; a ledger written before sequences existed has only bare ids, which are
proc's), with ``sequence`` and ``id`` beside it. ``state`` is ``running``, ``applied``,
``failed``, ``rolled back`` or ``stamped`` (marked applied without running, for a
database migrated by other means); ``stamped`` counts as ``applied`` everywhere
(``DONE``). ``direction`` says whether the last run was an upgrade or a downgrade.
``checksum`` is the file's checksum when it was applied or stamped; ``accept`` replaces
it after a review and appends ``{old, new, host, user, at}`` to ``accepted``.

Each run writes its counts and last processed ``_id`` after every batch, so a crash
leaves an accurate record, and appends a summary to ``runs`` when it ends (the last
``RUNS_KEPT``); a stamp and an accept append one too. ``procctl datafix history`` reads
those summaries.
"""
from __future__ import annotations

import getpass
import socket

from proc.timeutil import utcnow

COLLECTION = "datafix_ledger"

RUNNING, APPLIED, FAILED, ROLLED_BACK, STAMPED = "running", "applied", "failed", "rolled back", "stamped"
#: Not a state: what ``history`` calls an accept.
ACCEPTED = "accepted"
STATES = (RUNNING, APPLIED, FAILED, ROLLED_BACK, STAMPED)
#: The states in which a datafix counts as applied.
DONE = (APPLIED, STAMPED)
#: Runs kept in each entry's ``runs``.
RUNS_KEPT = 20


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return "unknown"


def _who() -> dict:
    return {"host": socket.gethostname(), "user": user()}


def _names(script) -> dict:
    return {"sequence": script.sequence, "id": script.revision, "description": script.description}


class Ledger:
    def __init__(self, database):
        self.collection = database[COLLECTION]

    def all(self) -> dict[str, dict]:
        return {doc["_id"]: doc for doc in self.collection.find({})}

    def get(self, label: str) -> dict | None:
        return self.collection.find_one({"_id": label})

    def start(self, script, run_id: str, direction: str, previous: dict | None, *,
              allowed_changed: bool = False) -> None:
        """Record that ``run_id`` started ``direction`` on ``script`` (state running)."""
        now = utcnow()
        fields = {**_names(script), **_who(), "state": RUNNING, "direction": direction,
                  "run_id": run_id, "started_at": now, "finished_at": None, "updated_at": now,
                  "error": None, "last_id": None, "last_collection": None, "counts": {},
                  "collections": [], "allowed_changed": allowed_changed}
        if not previous or previous.get("state") not in DONE or not previous.get("checksum"):
            fields["checksum"] = script.checksum
        self.collection.update_one({"_id": script.label}, {"$set": fields}, upsert=True)

    def progress(self, label: str, run_id: str, *, counts: dict, collections: list[dict],
                 last_collection: str, last_id) -> None:
        self.collection.update_one(
            {"_id": label, "run_id": run_id},
            {"$set": {"counts": counts, "collections": collections, "updated_at": utcnow(),
                      "last_collection": last_collection, "last_id": last_id}})

    def finish(self, label: str, run_id: str, state: str, *, counts: dict,
               collections: list[dict], error: str | None = None) -> None:
        now = utcnow()
        entry = self.collection.find_one({"_id": label, "run_id": run_id}) or {}
        started = entry.get("started_at") or now
        summary = {"run_id": run_id, "state": state, "direction": entry.get("direction"),
                   "host": entry.get("host"), "user": entry.get("user"), "started_at": started,
                   "finished_at": now, "duration_s": round((now - started).total_seconds(), 3),
                   "counts": counts, "changed": _changed(collections), "error": error,
                   "allowed_changed": bool(entry.get("allowed_changed"))}
        self.collection.update_one(
            {"_id": label, "run_id": run_id},
            {"$set": {"state": state, "finished_at": now, "updated_at": now, "error": error,
                      "counts": counts, "collections": collections},
             "$push": {"runs": {"$each": [summary], "$slice": -RUNS_KEPT}}})

    def stamp(self, script) -> None:
        """Record ``script`` as applied without running it (state stamped)."""
        now = utcnow()
        who = _who()
        summary = {"run_id": None, "state": STAMPED, "direction": "upgrade", **who,
                   "started_at": now, "finished_at": now, "duration_s": 0.0, "counts": {},
                   "changed": 0, "error": None, "checksum": script.checksum}
        self.collection.update_one(
            {"_id": script.label},
            {"$set": {**_names(script), **who, "state": STAMPED, "direction": "upgrade",
                      "run_id": None, "started_at": now, "finished_at": now, "updated_at": now,
                      "error": None, "checksum": script.checksum, "stamped_at": now},
             "$push": {"runs": {"$each": [summary], "$slice": -RUNS_KEPT}}},
            upsert=True)

    def accept(self, script, old: str | None) -> None:
        """Record the file's current checksum as reviewed, keeping the ``old`` one."""
        now = utcnow()
        who = _who()
        record = {"old": old, "new": script.checksum, "at": now, **who}
        summary = {"run_id": None, "state": ACCEPTED, "direction": None, **who, "started_at": now,
                   "finished_at": now, "duration_s": 0.0, "counts": {}, "changed": 0,
                   "error": None, "checksum_before": old, "checksum": script.checksum}
        self.collection.update_one(
            {"_id": script.label},
            {"$set": {"checksum": script.checksum, "updated_at": now},
             "$push": {"accepted": record,
                       "runs": {"$each": [summary], "$slice": -RUNS_KEPT}}})


def _changed(collections: list[dict]) -> int:
    """Documents a run changed: migrated by an upgrade, restored or converted by a downgrade."""
    return sum((c.get("migrated") or 0) + (c.get("restored") or 0) + (c.get("converted") or 0)
               for c in collections)
