"""The datafix commands as plain functions; ``migrations.cli`` wraps each one.

Each returns a result object (``.ok``, ``.to_dict()``) and raises ``LockHeld`` when another
run holds the lock, ``ScriptError``/``ConfigurationError`` for bad input (always before
anything is written). ``versions`` is the application's datafix directories (a
``:``-separated string, a path or a list; default ``$PROC_DATAFIX_VERSIONS``); proc's own
sequence is always included and runs first. Where a command takes a ``VERSION`` it is
``0001`` (proc's sequence) or ``sequence:id``.

An applied or stamped file whose checksum differs from the ledger's is an error, as in
Flyway's validate: ``status`` and ``verify`` fail naming it, ``upgrade`` refuses unless
``allow_changed``; ``accept`` records the new checksum after a review.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple


from proc import registry
from proc.exceptions import ConfigurationError
from proc.store import db

from . import arguments, history as history_module, lock as lock_module, readable, \
    script as script_module
from .backup import Backups
from .errors import ScriptError
from .ledger import DONE, FAILED, RUNNING, Ledger
from .lock import Lock
from .progress import Progress
from .runner import DEFAULT_BATCH_SIZE, Context, DatafixReport, run


@dataclass
class Result:
    """What a command did: one report per datafix, plus notes for the operator."""

    command: str
    dry_run: bool = False
    reports: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    collections: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    failed: bool = False
    #: ``verify``: per collection, the documents the current views cannot read.
    unreadable: list | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors and all(r.ok for r in self.reports)

    def to_dict(self) -> dict:
        return _plain({"command": self.command, "dry_run": self.dry_run, "ok": self.ok,
                       "collections": self.collections, "messages": self.messages,
                       "errors": self.errors,
                       "warnings": self.warnings + [w for r in self.reports for w in r.warnings],
                       "datafixes": [_report_dict(r) for r in self.reports],
                       **({} if self.unreadable is None else {"unreadable": self.unreadable})})


def _report_dict(r: DatafixReport) -> dict:
    return {"id": r.revision, "description": r.description, "direction": r.direction,
            "state": r.state, "error": r.error, "refused": r.refused, "totals": r.totals(),
            "peak_batch": r.peak_batch, "ledger": r.ledger,
            "collections": {name: {k: v for k, v in vars(c).items() if k != "name" and v not in
                                   (None, [], {})}
                            for name, c in r.collections.items()}}


def _plain(value):
    """JSON-ready: ObjectIds, datetimes and other BSON values as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# -- shared helpers -------------------------------------------------------------------------


def connect(uri: str | None = None):
    """The database (``uri``, else MONGODB_URI); pings a real server. A URI the driver
    cannot parse is a ``ScriptError`` (exit 2), not a traceback."""
    try:
        database = db.connect(uri, named="the database URI (--uri or MONGODB_URI)")
    except ConfigurationError as exc:  # names the URI, the reason and how to write it
        raise ScriptError(str(exc)) from None
    if not db.is_embedded():
        db.ping()
    return database


def model_collections() -> dict[str, type]:
    """Collection name -> Proc subclass, for every model PROC_MODELS defines."""
    return {cls._get_collection_name(): cls for cls in registry.load_models()}


def targets(database, named=(), entries: dict | None = None) -> list[str]:
    """The collections a command works on: every Proc model's collection that exists, those
    a previous run recorded in the ledger, and every collection named (even if empty)."""
    known = set(model_collections())
    for entry in (entries or {}).values():
        known.update(c["name"] for c in entry.get("collections") or [])
    existing = set(database.list_collection_names())
    return sorted((known & existing) | set(named))


def _setup(uri, versions, to):
    """Load and check the datafixes and ``to`` first (bad input writes nothing), then connect."""
    scripts = script_module.discover(versions)
    limit = script_module.resolve(scripts, arguments.target_version(to))
    return connect(uri), scripts, limit


def changed(script, entry: dict | None) -> str | None:
    """Why ``script`` is an error, if its file changed after it was applied or stamped."""
    if not entry or entry.get("state") not in DONE or entry.get("checksum") in (None, script.checksum):
        return None
    return (f"datafix {script.label} ({script.path}) changed after it was {entry['state']}: its "
            f"checksum {script.checksum[:12]} differs from the ledger's {entry['checksum'][:12]}. "
            f"Review the change, then record it with `procctl datafix accept {script.label}`")


def _count(database, names, query, limit: int = 0) -> dict[str, int]:
    counts = {}
    for name in names:
        n = database[name].count_documents(query, limit=limit) if limit else \
            database[name].count_documents(query)
        if n:
            counts[name] = n
    return counts


def _ensure_indexes(names) -> list[str]:
    problems = []
    for name, cls in model_collections().items():
        if name in names:
            try:
                cls.ensure_indexes()
            except Exception as exc:  # an index is not worth failing a finished migration
                problems.append(f"{name}: ensuring indexes failed: {type(exc).__name__}: {exc}")
    return problems


class _Session(NamedTuple):
    """What a writing command works with."""

    database: object
    scripts: list
    limit: int | None
    result: Result
    lock: Lock | None
    entries: dict
    names: list
    progress: Progress


@contextlib.contextmanager
def _session(name, uri, versions, to, collections, dry_run, lock_ttl, progress, batch_size):
    """Check the arguments, load the datafixes, connect, find the targets; the lock (none in
    a dry run) is taken before the first write (``Context._begin``), so a refused run leaves
    nothing behind."""
    arguments.batch_size(batch_size)
    collections = arguments.collection_names(collections)
    database, scripts, limit = _setup(uri, versions, to)
    result = Result(name, dry_run)
    held = None if dry_run else Lock(database, command=name, ttl=lock_ttl)
    progress = progress or Progress()
    try:
        if held is not None:
            held.check_free()
        entries = Ledger(database).all()
        result.collections = targets(database, collections, entries)
        yield _Session(database, scripts, limit, result, held, entries, result.collections, progress)
    finally:
        progress.close()
        if held is not None:
            if held.took_over:
                result.warnings.append(
                    f"took over an expired lock left by {lock_module.describe(held.took_over)}")
            held.release()


# -- commands -------------------------------------------------------------------------------


def upgrade(*, to: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, collections=(),
            dry_run: bool = False, include_processing: bool = False, uri: str | None = None,
            versions=None, progress: Progress | None = None, on_batch=None,
            lock_ttl: float = lock_module.TTL, allow_changed: bool = False) -> Result:
    """Apply, in run order, every datafix up to ``to`` that still has work.

    A datafix not recorded as applied (or stamped) runs whatever its id. An applied one
    runs again only when its selector still matches documents (written later by old code,
    or in a collection named for the first time); otherwise it says "nothing to do".
    Refuses, writing nothing, when an applied file changed, unless ``allow_changed``
    (then each run's summary in the ledger records ``allowed_changed: true``).
    """
    with _session("upgrade", uri, versions, to, collections, dry_run, lock_ttl, progress,
                  batch_size) as run_:
        database, scripts, limit, result, held, entries, names, progress = run_
        scripts = [s for s in scripts if limit is None or s.position <= limit]
        problems = [p for p in (changed(s, entries.get(s.label)) for s in scripts) if p]
        if problems and not allow_changed:
            result.errors.extend(problems)
            result.errors.append("upgrade refused, nothing was written: accept each change, or "
                                 "re-run with --allow-changed")
            return result
        result.warnings.extend(f"{p} (--allow-changed given)" for p in problems)
        ran = False
        for s in scripts:
            entry = entries.get(s.label)
            if entry and entry.get("state") in DONE and not _count(database, names, s.selector, 1):
                report = DatafixReport(s.label, s.description, "upgrade", dry_run, "nothing to do")
                for name, n in _count(database, names, s.invalid).items():
                    report.collection(name).invalid = n
                    report.warnings.append(f"{name}: {n} invalid document(s); see `procctl datafix status`")
                result.reports.append(report)
                continue
            ctx = Context(database, s, names, direction="upgrade", dry_run=dry_run,
                          options={"include_processing": include_processing,
                                   "allowed_changed": bool(allow_changed)},
                          batch_size=batch_size, lock=held, progress=progress,
                          on_batch=on_batch, previous=entry)
            report = run(ctx, s.module.upgrade)
            result.reports.append(report)
            ran = True
            if report.state in (FAILED, "refused"):
                break
        if not result.reports:
            result.messages.append("no datafix at or below --to")
        elif all(r.state == "nothing to do" for r in result.reports):
            result.messages.append("nothing to do")
        if ran and not dry_run and not any(r.state in (FAILED, "refused") for r in result.reports):
            result.warnings.extend(_ensure_indexes(names))
    return result


def downgrade(*, to: str | None = None, collections=(), dry_run: bool = False,
              batch_size: int = DEFAULT_BATCH_SIZE, uri: str | None = None,
              versions=None, progress: Progress | None = None,
              on_batch=None, lock_ttl: float = lock_module.TTL) -> Result:
    """Revert, newest first, the datafixes after ``to`` in run order (default: only the
    newest one) that are applied, stamped, failed or left running."""
    with _session("downgrade", uri, versions, to, collections, dry_run, lock_ttl, progress,
                  batch_size) as run_:
        database, scripts, limit, result, held, entries, names, progress = run_
        done = [s for s in scripts
                if (entries.get(s.label) or {}).get("state") in (*DONE, FAILED, RUNNING)]
        chosen = done[-1:] if limit is None else [s for s in done if s.position > limit]
        if not chosen:
            result.messages.append("nothing to downgrade")
        for s in reversed(chosen):
            ctx = Context(database, s, names, direction="downgrade", dry_run=dry_run,
                          batch_size=batch_size, lock=held, progress=progress,
                          on_batch=on_batch, previous=entries.get(s.label))
            report = run(ctx, s.module.downgrade)
            result.reports.append(report)
            if report.state == FAILED:
                break
    return result


def status(*, collections=(), uri: str | None = None, versions=None) -> Result:
    """Each datafix, its ledger state, and per collection the documents still to migrate
    (``remaining``) and the invalid ones. ``ok`` is False when invalid documents exist, a
    datafix failed, or an applied file changed (an error naming it)."""
    collections = arguments.collection_names(collections)
    database, scripts, _ = _setup(uri, versions, None)
    result = Result("status")
    entries = Ledger(database).all()
    names = result.collections = targets(database, collections, entries)
    for s in scripts:
        entry = entries.get(s.label) or {}
        problem = changed(s, entry)
        if problem:
            result.errors.append(problem)
        report = DatafixReport(s.label, s.description, entry.get("direction", "upgrade"),
                               state=entry.get("state", "pending"), error=entry.get("error"))
        for name, n in _count(database, names, s.selector).items():
            report.collection(name).remaining = n
        for name, n in _count(database, names, s.invalid).items():
            report.collection(name).invalid = n
        report.ledger = {k: entry.get(k) for k in ("started_at", "finished_at", "host", "user", "counts",
                                                    "last_collection", "last_id", "checksum")}
        result.reports.append(report)
    holder = lock_module.holder(database)
    if holder:
        result.messages.append(f"lock held by {lock_module.describe(holder)}")
    result.failed = any(r.state == FAILED for r in result.reports)
    return result


def verify(*, collections=(), uri: str | None = None, versions=None) -> Result:
    """``ok`` only if no document is in a shape a datafix migrates, none is invalid, and no
    applied file changed."""
    result = status(collections=collections, uri=uri, versions=versions)
    result.command = "verify"
    pending = sum(c.remaining for r in result.reports for c in r.collections.values())
    invalid = sum(c.invalid for r in result.reports for c in r.collections.values())
    found = readable.check(db.database(), result.collections, model_collections())
    unreadable = sum(u.count for u in found)
    result.messages.append(f"{pending} document(s) in the old shape, {invalid} invalid, "
                           f"{unreadable} unreadable by the current views, in "
                           f"{len(result.collections)} collection(s)")
    if unreadable:
        result.errors.append(f"{unreadable} document(s) hold a field of a type the current views "
                             "cannot read; fix them (or delete them):")
        result.errors.extend(line for u in found for line in u.lines())
    result.unreadable = [{"collection": u.collection, "count": u.count, "documents": u.docs}
                         for u in found]
    for r in result.reports:
        r.error = None  # verify judges the data, not the ledger's last error
    result.failed = pending > 0
    return result


def unlock(*, force: bool = False, uri: str | None = None) -> dict | None:
    """Release the lock whoever holds it (``force`` required); returns the released lock."""
    if not force:
        raise ScriptError("unlock releases a lock another run may still hold: pass --force "
                          "(only when that run is known to be dead)")
    return lock_module.force_release(connect(uri))


def new(name: str, *, sequence: str = script_module.PROC, versions=None) -> Path:
    """Create the next datafix file of ``sequence`` from the template and return its path."""
    return script_module.create(name, versions, sequence=sequence)


def prune_backups(*, older_than_days: float, uri: str | None = None,
                  lock_ttl: float = lock_module.TTL) -> int:
    """Delete backups written more than ``older_than_days`` days ago; returns how many."""
    if older_than_days < 0:
        raise ScriptError("--older-than must be zero or more days")
    database = connect(uri)
    with Lock(database, command="prune-backups", ttl=lock_ttl):
        return Backups(database).prune(timedelta(days=older_than_days))


def stamp(version: str, *, uri: str | None = None, versions=None,
          lock_ttl: float = lock_module.TTL) -> Result:
    """Record ``version`` as applied without running it (state stamped, with host, user and
    time), for a database migrated by other means. Already applied or stamped: no change."""
    scripts = script_module.discover(versions)
    s = script_module.find(scripts, version)
    database = connect(uri)
    result = Result("stamp")
    with Lock(database, command="stamp", ttl=lock_ttl):
        ledger = Ledger(database)
        entry = ledger.get(s.label) or {}
        if entry.get("state") in DONE:
            result.messages.append(f"datafix {s.label} is already {entry['state']}; nothing written")
        else:
            ledger.stamp(s)
            result.messages.append(f"stamped datafix {s.label} ({s.description}) as applied, "
                                   "without running it")
    return result


def accept(version: str, *, uri: str | None = None, versions=None,
           lock_ttl: float = lock_module.TTL) -> Result:
    """After a review, record the changed file of an applied (or stamped) ``version``: the
    ledger takes its new checksum and keeps the old one in ``accepted``."""
    scripts = script_module.discover(versions)
    s = script_module.find(scripts, version)
    database = connect(uri)
    result = Result("accept")
    with Lock(database, command="accept", ttl=lock_ttl):
        ledger = Ledger(database)
        entry = ledger.get(s.label) or {}
        if entry.get("state") not in DONE:
            raise ScriptError(f"datafix {s.label} is {entry.get('state') or 'not in the ledger'}: "
                              "only an applied or stamped datafix has a checksum to accept")
        if entry.get("checksum") == s.checksum:
            result.messages.append(f"datafix {s.label} is unchanged; nothing to accept")
        else:
            ledger.accept(s, entry.get("checksum"))
            result.messages.append(f"accepted the changed file of datafix {s.label} ({s.path}): "
                                   f"checksum {str(entry.get('checksum'))[:12]} -> {s.checksum[:12]}")
    return result


def history(*, uri: str | None = None, versions=None) -> list[dict]:
    """Every ledger entry's kept runs, stamps and accepts, oldest first (``migrations.history``)."""
    scripts = script_module.discover(versions)
    database = connect(uri)
    return history_module.rows(Ledger(database).all(), scripts)


__all__ = ["Result", "accept", "downgrade", "history", "new", "prune_backups", "stamp", "status",
           "targets", "unlock", "upgrade", "verify"]
