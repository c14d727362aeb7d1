"""The startup check of the API server and the workers: no document may still be in a
shape a datafix migrates. Cheap: one ``find_one`` per datafix and collection for each kind."""
from __future__ import annotations

import logging

from proc import db, registry
from proc.exceptions import ConfigurationError

from . import script

log = logging.getLogger(__name__)

COMMAND = "procctl datafix upgrade"


def refuse_if_legacy(what: str) -> None:
    """Raise ``ConfigurationError`` naming the command to run when any Proc collection holds
    documents a datafix can migrate; only log invalid documents (they do not block)."""
    database = db.database()
    names = sorted({cls._get_collection_name() for cls in registry.load_models()})
    pending, invalid = [], []
    for s in script.discover():
        for name in names:
            doc = database[name].find_one(s.selector, {"_id": 1})
            if doc is not None:
                pending.append(f"{name} (datafix {s.revision}, e.g. _id {doc['_id']!r})")
            bad = database[name].find_one(s.invalid, {"_id": 1})
            if bad is not None:
                invalid.append(f"{name} (datafix {s.revision}, e.g. _id {bad['_id']!r})")
    if invalid:
        log.warning("%s: invalid documents that no datafix can migrate in %s; see "
                    "`procctl datafix status`", what, "; ".join(invalid))
    if pending:
        raise ConfigurationError(
            f"{what} cannot start: documents are still in the shape of the previous version in "
            f"{'; '.join(pending)}. Stop the old workers, then run `{COMMAND}` "
            "(try `--dry-run` first; see docs/datafix.md)")
