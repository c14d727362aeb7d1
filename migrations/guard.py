"""The startup check of the API server and the workers: every datafix of every configured
sequence (proc's own, and the directories of ``PROC_DATAFIX_VERSIONS``) is finished, and
no document is still in a shape one of them migrates.

Refuses (``ConfigurationError``) when a datafix's ledger entry says ``running`` or
``failed`` (an upgrade that did not finish; ``applied`` and ``stamped`` both count as
done), or when its selector still matches a document. Cheap: one read of the ledger,
then one ``find_one`` per datafix and collection for each kind. Invalid documents are
only logged.
"""
from __future__ import annotations

import logging

from proc import db, registry
from proc.exceptions import ConfigurationError

from . import script
from .ledger import FAILED, RUNNING, Ledger

log = logging.getLogger(__name__)

COMMAND = "procctl datafix upgrade"


def refuse_if_legacy(what: str) -> None:
    """Raise ``ConfigurationError`` naming the command to run when a datafix did not finish
    or any Proc collection holds documents a datafix can migrate; only log invalid ones."""
    database = db.database()
    scripts = script.discover()
    names = sorted({cls._get_collection_name() for cls in registry.load_models()})
    entries = Ledger(database).all()
    unfinished = [f"{s.label} ({entries[s.label]['state']})" for s in scripts
                  if (entries.get(s.label) or {}).get("state") in (RUNNING, FAILED)]
    pending, invalid = [], []
    for s in scripts:
        for name in names:
            doc = database[name].find_one(s.selector, {"_id": 1})
            if doc is not None:
                pending.append(f"{name} (datafix {s.label}, e.g. _id {doc['_id']!r})")
            bad = database[name].find_one(s.invalid, {"_id": 1})
            if bad is not None:
                invalid.append(f"{name} (datafix {s.label}, e.g. _id {bad['_id']!r})")
    if invalid:
        log.warning("%s: invalid documents that no datafix can migrate in %s; see "
                    "`procctl datafix status`", what, "; ".join(invalid))
    if pending:
        raise ConfigurationError(
            f"{what} cannot start: documents are still in the shape of the previous version in "
            f"{'; '.join(pending)}. Stop the old workers, then run `{COMMAND}` "
            "(try `--dry-run` first; see docs/datafix.md)")
    if unfinished:
        raise ConfigurationError(
            f"{what} cannot start: the ledger says datafix {', '.join(unfinished)} did not finish. "
            f"Run `{COMMAND}` again, or, if the database was migrated by other means, "
            "`procctl datafix stamp VERSION`")
