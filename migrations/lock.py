"""The datafix lock: one document with a unique key, an owner and an expiry.

Acquiring is one conditional upsert on ``_id``: it succeeds when no lock exists, when the
lock has expired (a crashed run) or when this owner already holds it; otherwise the
insert hits the unique ``_id`` and the caller learns who holds it and since when. The
running datafix renews the expiry after every batch and stops if it lost the lock.

Times are the client's clock (``proc.timeutil.utcnow``). A real server could compare
with ``$$NOW`` in a pipeline update instead; the embedded database ignores ``$$NOW``, so
one code path uses client time everywhere. Keep runner clocks in sync (NTP) and the TTL
well above clock skew.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from proc.timeutil import utcnow

from .errors import LockHeld, LockLost

log = logging.getLogger(__name__)

COLLECTION = "datafix_lock"
KEY = "datafix"
#: Seconds a lock lives without renewal (a batch must take less than this).
TTL = 120.0


def describe(holder: dict) -> str:
    since = holder.get("since")
    expires = holder.get("expires_at")
    return (f"{holder.get('owner')} ({holder.get('command') or 'datafix'}) since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC, expires {expires:%Y-%m-%d %H:%M:%S} UTC"
            if since and expires else str(holder.get("owner")))


class Lock:
    """The lock as held (or wanted) by this run."""

    def __init__(self, database, *, command: str = "datafix", ttl: float = TTL):
        self.collection = database[COLLECTION]
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.command = command
        self.ttl = timedelta(seconds=ttl)
        self.took_over: dict | None = None
        self.held = False

    def acquire(self) -> "Lock":
        """Take the lock or raise ``LockHeld`` naming its owner; take over an expired one."""
        now = utcnow()
        fields = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                  "command": self.command, "since": now, "expires_at": now + self.ttl}
        query = {"_id": KEY, "$or": [{"expires_at": {"$lt": now}}, {"owner": self.owner}]}
        try:
            before = self.collection.find_one_and_update(
                query, {"$set": fields}, upsert=True, return_document=ReturnDocument.BEFORE)
        except DuplicateKeyError:
            self.check_free()
            raise LockHeld("another datafix run holds the lock: "
                           f"{describe(self.collection.find_one({'_id': KEY}) or {'owner': 'unknown'})}. "
                           "Wait for it, or if that run crashed, release it with "
                           "`procctl datafix unlock --force`") from None
        if before and before.get("owner") != self.owner:
            self.took_over = before
            log.warning("took over an expired datafix lock left by %s", describe(before))
        self.held = True
        return self

    def check_free(self) -> None:
        """Raise ``LockHeld`` if another run holds an unexpired lock. Only reads: a run checks
        this first and takes the lock before its first write (``ensure``)."""
        current = self.collection.find_one({"_id": KEY})
        if current and current.get("owner") != self.owner and current.get("expires_at") \
                and current["expires_at"] >= utcnow():
            raise LockHeld(f"another datafix run holds the lock: {describe(current)}. Wait for it, "
                           "or if that run crashed, release it with `procctl datafix unlock --force`")

    def ensure(self) -> "Lock":
        """Take the lock unless this run holds it already: called before a run's first write,
        so a run that writes nothing (a refusal, nothing to do) creates no lock collection."""
        return self if self.held else self.acquire()

    def renew(self) -> None:
        """Push the expiry forward; raise ``LockLost`` if another run took the lock."""
        result = self.collection.update_one({"_id": KEY, "owner": self.owner},
                                            {"$set": {"expires_at": utcnow() + self.ttl}})
        if result.matched_count != 1:
            raise LockLost(f"the datafix lock of {self.owner} expired and another run took it; "
                           "this run stopped (re-run to continue; raise the TTL if batches are slow)")

    def release(self) -> None:
        if not self.held:
            return
        self.collection.delete_one({"_id": KEY, "owner": self.owner})
        self.held = False

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(database) -> dict | None:
    """The lock document, or None when nobody holds it."""
    return database[COLLECTION].find_one({"_id": KEY})


def force_release(database) -> dict | None:
    """Delete the lock whoever holds it; returns what was deleted."""
    return database[COLLECTION].find_one_and_delete({"_id": KEY})
