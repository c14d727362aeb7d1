"""Checks of the values a datafix command is given, before it connects or writes anything.

Each raises ``ScriptError`` (exit 2) naming the value, what is wrong with it and what to
give instead, so no bad value reaches the driver (which would answer with a traceback or,
worse, after a run has started and written its ledger entry).
"""
from __future__ import annotations

from .backup import COLLECTION as BACKUPS
from .errors import ScriptError
from .ledger import COLLECTION as LEDGER
from .lock import COLLECTION as LOCK

#: The largest ``--batch-size``: a batch is held in memory and sent in one insert.
MAX_BATCH_SIZE = 100_000
#: The datafix's own bookkeeping: never a target.
OWN_COLLECTIONS = (LEDGER, LOCK, BACKUPS)
#: MongoDB's limit on a namespace (``database.collection``), in bytes, kept for the name alone.
MAX_NAME_BYTES = 255


def collection_name(name) -> str:
    """``name`` if MongoDB accepts it as a collection a datafix may work on."""
    shown = f"--collection {name!r}"
    if not isinstance(name, str) or not name.strip():
        raise ScriptError(f"{shown}: a collection name is empty; give the name of a collection "
                          "(e.g. --collection legacy_archive) or leave the option out")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ScriptError(f"{shown}: the name is not valid UTF-8 text; give the collection's "
                          "name as MongoDB lists it") from None
    problems = (("$" in name, "contains '$'"), ("\x00" in name, "contains a NUL character"),
                (name != name.strip(), "starts or ends with white space"),
                (name.startswith(".") or name.endswith(".") or ".." in name,
                 "starts or ends with '.', or holds '..'"),
                (name.startswith("system."), "is a system collection"),
                (name in OWN_COLLECTIONS, "is the datafix's own bookkeeping"),
                (size > MAX_NAME_BYTES, f"is longer than {MAX_NAME_BYTES} bytes"))
    for bad, why in problems:
        if bad:
            raise ScriptError(f"{shown}: the name {why}; give the name of a collection holding "
                              "Proc documents, as `show collections` lists it")
    return name


def collection_names(names) -> list[str]:
    """Every name checked (``collection_name``), in order, once each."""
    return list(dict.fromkeys(collection_name(n) for n in names or ()))


def batch_size(value) -> int:
    """``value`` if it is a whole number from 1 to ``MAX_BATCH_SIZE``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ScriptError(f"--batch-size {value!r}: give a whole number from 1 to {MAX_BATCH_SIZE} "
                          "(default 5000)")
    return value


def target_version(value) -> str | None:
    """``--to``: None, or a non-empty VERSION (``base``, ``0001``, ``myapp:0001``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ScriptError(f"--to {value!r}: give a VERSION (0001 or sequence:id) or base; leave "
                          "the option out for the default")
    return value.strip()
