"""Running one datafix: the ``ctx`` its ``upgrade``/``downgrade`` gets, and what it reports.

The ctx API (see docs/datafix.md):

- ``ctx.collections`` (names), ``ctx.collection(name)``, ``ctx.dry_run``, ``ctx.options``
  (e.g. ``include_processing``), ``ctx.batch_size``, ``ctx.revision`` (the datafix's
  label: ``0001`` in proc's sequence, ``myapp:0001`` in another; backups are keyed by it).
- ``ctx.report_invalid(query, fields)``: count and list documents it will not touch.
- ``ctx.refuse(query, message)``: stop before any write if any document matches
  (in a dry run: say that the run would stop).
- ``ctx.rewrite(select, backup, pipeline, rows)``: the batched upgrade.
- ``ctx.restore(select, witness, expected, inverse, rows)``: the batched downgrade.

Every write filter includes ``select``, so documents already migrated are never matched
again: an interrupted run resumes by itself, a finished one changes nothing.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Callable

from pymongo import UpdateOne
from pymongo.errors import OperationFailure

from . import keyset, match
from .backup import Backups
from .errors import DatafixError, LockHeld, Refused
from .ledger import APPLIED, FAILED, ROLLED_BACK, Ledger
from .progress import Progress

log = logging.getLogger(__name__)

#: Sample ids shown per mapping row, invalid documents listed per collection.
SAMPLES, INVALID_LISTED = 5, 50
DEFAULT_BATCH_SIZE = 5000


@dataclass
class CollectionReport:
    name: str
    matched: int = 0
    migrated: int = 0
    skipped: int = 0
    invalid: int = 0
    processing: int = 0
    converted: int = 0
    restored: int = 0
    remaining: int = 0
    last_id: object = None
    rows: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    invalid_docs: list = field(default_factory=list)
    processing_ids: list = field(default_factory=list)
    converted_docs: list = field(default_factory=list)

    def counts(self) -> dict:
        return {k: getattr(self, k) for k in ("matched", "migrated", "skipped", "invalid")}

    def ledger_entry(self) -> dict:
        return {"name": self.name, **self.counts(), "restored": self.restored,
                "converted": self.converted, "last_id": self.last_id}


@dataclass
class DatafixReport:
    """What one datafix did (or, in a dry run, would do)."""

    revision: str
    description: str
    direction: str
    dry_run: bool = False
    state: str = "pending"
    collections: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    error: str | None = None
    refused: str | None = None
    peak_batch: int = 0
    ledger: dict = field(default_factory=dict)

    def collection(self, name: str) -> CollectionReport:
        return self.collections.setdefault(name, CollectionReport(name))

    def totals(self) -> dict:
        keys = ("matched", "migrated", "skipped", "invalid", "processing", "converted", "restored")
        return {k: sum(getattr(c, k) for c in self.collections.values()) for k in keys}

    @property
    def ok(self) -> bool:
        return self.error is None and self.refused is None and self.totals()["invalid"] == 0


class Context:
    """What a datafix's ``upgrade(ctx)``/``downgrade(ctx)`` works with."""

    def __init__(self, database, script, collections: list[str], *, direction: str,
                 dry_run: bool = False, options: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, lock=None, progress: Progress | None = None,
                 on_batch: Callable | None = None, previous: dict | None = None):
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.db = database
        self.script = script
        self.revision = script.label
        self.collections = list(collections)
        self.direction = direction
        self.dry_run = dry_run
        self.options = dict(options or {})
        self.batch_size = batch_size
        self.report = DatafixReport(script.label, script.description, direction, dry_run)
        self.run_id = uuid.uuid4().hex
        self._lock = lock
        self._progress = progress or Progress()
        self._on_batch = on_batch
        self._previous = previous
        self._ledger = Ledger(database)
        self._backups = Backups(database)
        self._begun = False
        self._selects: list[dict] = []
        #: What ``remaining`` found: per collection, the count and sample ``_id``s.
        self.left: list[str] = []

    def collection(self, name: str):
        return self.db[name]

    # -- checks (never write) ----------------------------------------------------------

    def report_invalid(self, query: dict, fields=()) -> int:
        """Count and list (``_id`` and ``fields``) the documents matching ``query``."""
        total = 0
        for name in self.collections:
            coll = self.collection(name)
            n = coll.count_documents(query)
            if not n:
                continue
            rep = self.report.collection(name)
            rep.invalid = n
            projection = {f: 1 for f in fields} or {"_id": 1}
            rep.invalid_docs = keyset.first(coll, query, INVALID_LISTED, projection)
            self.report.warnings.append(f"{name}: {n} invalid document(s) left untouched")
            total += n
        return total

    def refuse(self, query: dict, message: str) -> None:
        """Stop before any write when a document matches ``query`` (a dry run only says so)."""
        found = []
        for name in self.collections:
            coll = self.collection(name)
            n = coll.count_documents(query)
            if n:
                rep = self.report.collection(name)
                rep.processing = n
                rep.processing_ids = [d["_id"] for d in keyset.first(coll, query, SAMPLES, {"_id": 1})]
                found.append(f"{n} in {name} (e.g. {', '.join(map(str, rep.processing_ids))})")
        if not found:
            return
        text = f"{message}: {'; '.join(found)}"
        self.report.refused = text
        if not self.dry_run:
            raise Refused(text)

    # -- the batched upgrade ---------------------------------------------------------------

    def rewrite(self, *, select: dict, backup, pipeline: list, rows: dict) -> None:
        """Migrate every document matching ``select``, batch by batch, in ``_id`` order.

        Per batch: one sorted query reads the next ``batch_size`` documents still matching
        ``select`` (their ``_id`` and ``backup`` fields), one insert stores those values in
        the backup collection, the write migrates them (``match.update_batch``), then the
        ledger records progress and the lock is renewed: four round trips plus the write's
        (one per 100 ids on a real server, one on the embedded database). On a real server
        the write is one ``update_many`` filtered by ``_id $in`` the batch alone (an ``_id``
        index lookup per id on mongod and on SecantusDB, which scans for ``_id $in`` plus
        other conditions) per 100 ids, whose pipeline re-checks ``select`` with ``$cond``;
        where that cannot be written exactly, one ``UpdateOne`` per document filtered by its
        ``_id`` plus ``select``; on the embedded database one ``update_many`` of ``_id $in``
        plus ``select`` (store-key lookups there). Either way a document a
        concurrent writer moved out of ``select`` since the read is not written, and one
        that came to match after the read is not in the batch (never migrated unbacked).
        ``rows`` (label -> filter) are counted in a dry run, which writes nothing.
        """
        self._selects.append(select)
        if self.dry_run:
            self._count_rows(select, rows)
            return
        self._begin()
        self._backups.ensure_index()
        projection = {"_id": 1, **{f: 1 for f in backup}}
        guarded = match.shape(select, pipeline)
        for name in self.collections:
            coll = self.collection(name)
            rep = self.report.collection(name)
            self._progress.start(f"{self.revision} {name}", coll.count_documents(select))
            for batch in self._batches(coll, select, projection):
                ids = [d["_id"] for d in batch]
                self._backups.save([Backups.record(self.revision, name, self.run_id, d, backup)
                                    for d in batch])
                modified = self._write(coll, rep, ids, select, pipeline, guarded)
                rep.matched += len(batch)
                rep.migrated += modified
                rep.skipped += max(0, len(batch) - modified)
                self._after_batch(name, rep, batch, ids[-1])
            self._progress.finish()

    def _batches(self, coll, select: dict, projection: dict):
        """The documents matching ``select``: the keyset walk in ``_id`` order, then those
        whose ``_id`` type the walk cannot order (``keyset.rest``)."""
        yield from keyset.walk(coll, select, batch_size=self.batch_size, projection=projection)
        yield from keyset.rest(coll, select, batch_size=self.batch_size, projection=projection)

    def _write(self, coll, rep: CollectionReport, ids: list, select: dict, pipeline: list,
               guarded) -> int:
        """One batch's write (``match.update_batch``). When the server refuses it
        (``OperationFailure``: a value the pipeline cannot take, a document grown too large),
        the batch is written again one document at a time, each guarded by ``select`` as
        before, so the others are migrated and the run fails naming the collection, the
        ``_id`` and the server's reason of each refused document (``DatafixError``)."""
        try:
            return match.update_batch(coll, ids, select, pipeline, guarded)
        except OperationFailure:
            pass
        modified, refused = 0, []
        for doc_id in ids:
            try:
                modified += match.update_batch(coll, [doc_id], select, pipeline, guarded)
            except OperationFailure as exc:
                refused.append(f"_id {doc_id!r}: {_reason(exc)}")
        if not refused:
            return modified
        rep.matched += len(ids)
        rep.migrated += modified
        shown = "; ".join(refused[:SAMPLES]) + (f"; and {len(refused) - SAMPLES} more"
                                                 if len(refused) > SAMPLES else "")
        raise DatafixError(f"{coll.name}: the server refused to migrate {len(refused)} document(s): "
                           f"{shown}. Fix or remove them (the backup collection holds their "
                           "values), then run again: it resumes")

    def _count_rows(self, select: dict, rows: dict) -> None:
        for name in self.collections:
            coll = self.collection(name)
            rep = self.report.collection(name)
            rep.matched += coll.count_documents(select)
            for label, row in rows.items():
                query = {"$and": [select, row]}
                n = coll.count_documents(query)
                if n:
                    rep.rows[label] = rep.rows.get(label, 0) + n
                    rep.samples[label] = [d["_id"] for d in keyset.first(coll, query, SAMPLES,
                                                                         {"_id": 1})]

    # -- the batched downgrade -------------------------------------------------------------

    def restore(self, *, select: dict, witness, expected: Callable[[dict], dict], inverse: list,
                rows: dict) -> None:
        """Give documents matching ``select`` their backed-up values, batch by batch.

        A document whose ``witness`` fields equal ``expected(backup values)`` is still as the
        upgrade left it: it gets exactly the backed-up values back (one ``bulk_write`` per
        batch). Any other (no backup, or changed since) is converted by the ``inverse``
        pipeline (one write per batch, of the shape ``rewrite`` uses) and reported. A dry
        run writes nothing.
        """
        self._selects.append(select)
        if self.dry_run:
            self._count_rows(select, rows)
        else:
            self._begin()
        projection = {f: 1 for f in witness}
        guarded = match.shape(select, inverse)
        for name in self.collections:
            coll = self.collection(name)
            rep = self.report.collection(name)
            if not self.dry_run:
                self._progress.start(f"{self.revision} {name}", coll.count_documents(select))
            for batch in self._batches(coll, select, projection):
                ids = [d["_id"] for d in batch]
                backups = self._backups.latest(self.revision, name, ids)
                ops, converted = [], []
                for doc in batch:
                    record = backups.get(keyset.key(doc["_id"]))
                    current = {k: v for k, v in doc.items() if k != "_id"}
                    if record is None:
                        converted.append((doc["_id"], "no backup"))
                    elif current != expected(record["values"]):
                        converted.append((doc["_id"], "changed since the upgrade"))
                    else:
                        ops.append(_exact_restore(doc["_id"], current, witness, record))
                rep.matched += len(batch)
                if self.dry_run:
                    rep.restored += len(ops)
                    _note_converted(rep, converted, len(converted))
                    continue
                restored = coll.bulk_write(ops, ordered=False).modified_count if ops else 0
                rep.restored += restored
                if converted or restored < len(ops):  # those changed meanwhile still match select
                    _note_converted(rep, converted,
                                    match.update_batch(coll, ids, select, inverse, guarded))
                self._after_batch(name, rep, batch, ids[-1])
            if not self.dry_run:
                self._progress.finish()

    # -- bookkeeping -----------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._begun and not self.dry_run:
            if self._lock is not None:
                self._lock.ensure()
            self._ledger.start(self.script, self.run_id, self.direction, self._previous,
                               allowed_changed=bool(self.options.get("allowed_changed")))
            self._begun = True

    def _after_batch(self, name: str, rep: CollectionReport, batch: list, last_id) -> None:
        rep.last_id = last_id
        self.report.peak_batch = max(self.report.peak_batch, len(batch))
        self._progress.advance(len(batch))
        if not self.dry_run:
            self._ledger.progress(self.revision, self.run_id, counts=self._counts(),
                                  collections=self._entries(), last_collection=name,
                                  last_id=rep.last_id)
            if self._lock is not None:
                self._lock.renew()
        if self._on_batch is not None:
            self._on_batch(self, name, batch)

    def _counts(self) -> dict:
        totals = self.report.totals()
        return {k: totals[k] for k in ("matched", "migrated", "skipped", "invalid")}

    def _entries(self) -> list[dict]:
        return [c.ledger_entry() for c in self.report.collections.values()]

    def remaining(self) -> int:
        """Documents still matching a ``select`` used by this run (0 when it is complete)."""
        total = 0
        for name in self.collections:
            coll = self.collection(name)
            for select in self._selects:
                n = coll.count_documents(select)
                if n:
                    self.report.collection(name).remaining += n
                    sample = [d["_id"] for d in coll.find(select, {"_id": 1}).limit(SAMPLES)]
                    note = (f"{name}: {n} document(s) still match after the run: _id "
                            f"{', '.join(f'{i!r} ({type(i).__name__})' for i in sample)}")
                    self.report.warnings.append(note)
                    self.left.append(note)
                total += n
        return total

    def finish(self, state: str, error: str | None = None) -> None:
        self.report.state = state
        self.report.error = error
        if self.dry_run:
            return
        self._begin()
        self._ledger.finish(self.revision, self.run_id, state, counts=self._counts(),
                            collections=self._entries(), error=error)


def _exact_restore(doc_id, current: dict, witness, record: dict) -> UpdateOne:
    """Put the backed-up values back, only if the witness fields are still ``current``."""
    query = {"_id": doc_id}
    for f in witness:
        query[f] = current[f] if f in current else {"$exists": False}
    values = record["values"]
    update: dict = {}
    if values:
        update["$set"] = dict(values)
    absent = [f for f in record["fields"] if f not in values]
    if absent:
        update["$unset"] = {f: "" for f in absent}
    return UpdateOne(query, update)


def _reason(exc: OperationFailure) -> str:
    """The server's message for a refused write, one line, at most 300 characters."""
    details = exc.details or {}
    errors = details.get("writeErrors") or []
    text = str(errors[0].get("errmsg") if errors else details.get("errmsg") or exc)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


def _note_converted(rep: CollectionReport, converted: list, count: int) -> None:
    rep.converted += count
    room = INVALID_LISTED - len(rep.converted_docs)
    rep.converted_docs.extend({"_id": i, "reason": why} for i, why in converted[:max(room, 0)])


def run(ctx: Context, function) -> DatafixReport:
    """Run ``function(ctx)`` (a datafix's upgrade or downgrade) and record the outcome."""
    done_state = APPLIED if ctx.direction == "upgrade" else ROLLED_BACK
    try:
        function(ctx)
        if ctx.dry_run:
            ctx.report.state = "would stop" if ctx.report.refused else f"would be {done_state}"
            return ctx.report
        left = ctx.remaining()
        if left:
            ctx.finish(FAILED, f"{left} document(s) still to migrate after the run; "
                               + "; ".join(ctx.left))
        else:
            ctx.finish(done_state)
    except Refused as exc:
        ctx.report.state = "refused"
        ctx.report.refused = str(exc)
    except LockHeld:  # taken before the first write: nothing was written, exit code 3
        raise
    except BaseException as exc:
        reason = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                  else f"{type(exc).__name__}: {exc}")
        log.error("datafix %s %s failed: %s", ctx.revision, ctx.direction, reason)
        if not ctx.dry_run:
            try:
                ctx.finish(FAILED, reason)
            except DatafixError:
                pass
        ctx.report.state, ctx.report.error = FAILED, reason
        if not isinstance(exc, Exception):
            raise
    return ctx.report
