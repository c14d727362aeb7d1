"""The startup check of the API server and the workers: every datafix of every configured
sequence (proc's own, and the directories of ``PROC_DATAFIX_VERSIONS``) is finished, and
no document is still in a shape one of them migrates.

Refuses (``ConfigurationError``) when a datafix's ledger entry says ``running`` or
``failed`` (an upgrade that did not finish; ``applied`` and ``stamped`` both count as
done), or when its selector still matches a document. Invalid documents are only logged.

Bounded, whatever the history: one read of the ledger, then per datafix and collection one
``find_one`` for the old shape, then (with the time left) one for invalid documents, all
within ``PROC_DATAFIX_CHECK_TIMEOUT`` (each read's ``maxTimeMS`` is the time left). A search
that finds nothing reads the whole collection, which with tens of millions of documents
takes minutes; the bound keeps every start to seconds. A read that runs out proves nothing: for a datafix the ledger records as
applied or stamped the start goes on with a warning (documents written in the old shape
later are what ``procctl datafix status`` counts and ``upgrade`` migrates); for one it has
no record of, the start is refused and the upgrade, run once, records it.
"""
from __future__ import annotations

import logging
import time

from pymongo.errors import ExecutionTimeout

from proc import config, registry
from proc.store import db
from proc.exceptions import ConfigurationError

from . import script
from .ledger import FAILED, RUNNING, Ledger

log = logging.getLogger(__name__)

COMMAND = "procctl datafix upgrade"
_RAN_OUT = object()


def refuse_if_legacy(what: str) -> None:
    """Raise ``ConfigurationError`` naming the command to run when a datafix did not finish
    or any Proc collection holds documents a datafix can migrate; only log invalid ones."""
    database = db.database()
    scripts = script.discover()
    names = sorted({cls._get_collection_name() for cls in registry.load_models()})
    entries = Ledger(database).all()
    unfinished = [f"{s.label} ({entries[s.label]['state']})" for s in scripts
                  if (entries.get(s.label) or {}).get("state") in (RUNNING, FAILED)]
    limit = config.get().datafix_check_timeout
    deadline = time.monotonic() + limit

    def first(name: str, selector: dict):
        """The _id of one document of ``name`` matching ``selector`` (None: none), or
        ``_RAN_OUT`` when the check's time was spent first."""
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms < 1:
            return _RAN_OUT
        try:
            doc = database[name].find_one(selector, {"_id": 1}, max_time_ms=left_ms)
        except ExecutionTimeout:
            return _RAN_OUT
        return None if doc is None else doc["_id"]

    pending, invalid, unchecked, unknown = [], [], [], []
    for s in scripts:
        done = (entries.get(s.label) or {}).get("state") not in (None, RUNNING, FAILED)
        for name in names:
            found = first(name, s.selector)
            if found is _RAN_OUT:
                (unchecked if done else unknown).append(f"{name} (datafix {s.label})")
            elif found is not None:
                pending.append(f"{name} (datafix {s.label}, e.g. _id {found!r})")
    for s in scripts:  # only ever logged: with what time is left
        for name in names:
            found = first(name, s.invalid)
            if found is not _RAN_OUT and found is not None:
                invalid.append(f"{name} (datafix {s.label}, e.g. _id {found!r})")
    seconds = f"{limit:g} s (PROC_DATAFIX_CHECK_TIMEOUT)"
    if unchecked:
        log.warning("%s: the search for documents in a shape a datafix migrates did not finish "
                    "within %s in %s; starting, since the ledger records those datafixes as done. "
                    "`procctl datafix status` counts such documents", what, seconds, "; ".join(unchecked))
    if invalid:
        log.warning("%s: invalid documents that no datafix can migrate in %s; see "
                    "`procctl datafix status`", what, "; ".join(invalid))
    if pending:
        raise ConfigurationError(
            f"{what} cannot start: documents are still in the shape of the previous version in "
            f"{'; '.join(pending)}. Stop the old workers, then run `{COMMAND}` "
            "(try `--dry-run` first; see docs/datafix.md)")
    if unknown:
        raise ConfigurationError(
            f"{what} cannot start: the ledger has no record of datafix(es) for {'; '.join(unknown)}, "
            f"and the search for documents they migrate did not finish within {seconds}. "
            f"Run `{COMMAND}` once (it migrates what it finds and records each datafix), or, if the "
            "database holds no documents of the previous version, `procctl datafix stamp VERSION`")
    if unfinished:
        raise ConfigurationError(
            f"{what} cannot start: the ledger says datafix {', '.join(unfinished)} did not finish. "
            f"Run `{COMMAND}` again, or, if the database was migrated by other means, "
            "`procctl datafix stamp VERSION`")
