"""Backfill the time buckets of "where time goes" from the phases of processes already ended.

Datafix id: 0003
Created:    2026-12-05

proc counts every attempt that ends into the time buckets (``proc.machine.tally``) from the
moment it runs. This datafix, run once after the upgrade, counts the attempts that ended
before that: every SUCCESS or FAILURE document of each Proc collection whose
``complete_time`` lies in the buckets' retention (30 days) and before the cut-off, into its
minute bucket (if within the minute buckets' retention) and its hour bucket, with the
``phases`` it carries (a document without them is counted as ended, in no phase).

Cut-off: the earliest end the live tally ever counted (the ``first`` of its ``meta``
document), or the start of this run if nothing was counted yet: an attempt is counted either
live or here, never both. The all-time totals of ``/metrics`` are not backfilled (a jump
would read as a burst to ``rate()``); they count from the upgrade on.

Per collection: one scan of its ended documents of the window (by ``complete_time``), the
counts summed in memory (one entry per kind and bucket, whatever the number of documents),
then one ordered ``bulk_write`` of ``$inc`` upserts ending with a mark in ``meta``
(``backfilled.<collection>``): a collection already marked is skipped, so a run stopped
between collections resumes without counting twice.

It also creates the index ``(w, t)`` that serves the reads of a window.

downgrade: nothing to give back (the previous version does not read the buckets); the
counts stay.
"""
from datetime import timedelta

from pymongo import UpdateOne

from proc.machine import tally
from proc.timeutil import utcnow

revision = "0003"
description = "backfill the time buckets of where time goes from the phases of ended processes"

#: Nothing is rewritten in the Proc collections: the runner's selectors match nothing.
selector: dict = {"_never_matches_": {"$exists": True}}
invalid: dict = {"_never_matches_": {"$exists": True}}
BACKUP = ()

ENDED = ("SUCCESS", "FAILURE")


def cut_off(buckets, now):
    """The end of what this backfill counts: the live tally's first end, else ``now``."""
    meta = buckets.find_one({"_id": tally.META}) or {}
    return meta.get("first") or now, meta.get("backfilled") or {}


def counts_of(coll, name: str, since, until, now) -> tuple[dict, int]:
    """The bucket increments of ``coll``'s attempts that ended in ``[since, until)``."""
    pending, n = {}, 0
    query = {"process_status": {"$in": list(ENDED)}, "complete_time": {"$gte": since, "$lt": until},
             "current_process": {"$type": "string"}}
    minutes_since = now - timedelta(seconds=tally.KEPT[60])
    for raw in coll.find(query, {"current_process": 1, "process_status": 1, "phases": 1, "complete_time": 1}):
        end = raw["complete_time"]
        widths = [w for w in tally.KEPT if w != 60 or end >= minutes_since]
        phases = raw.get("phases") if isinstance(raw.get("phases"), dict) else {}
        tally.add(pending, f"{name}.{raw['current_process']}", raw["process_status"], phases, end,
                  widths=widths, total=False)
        n += 1
    return pending, n


def upgrade(ctx):
    """Count each collection's ended attempts of the retention window into the buckets."""
    buckets = ctx.collection(tally.COLLECTION)
    if not ctx.dry_run:
        buckets.create_index(tally.INDEX)  # the reads of a window: width, then time
    now = utcnow()
    until, done = cut_off(buckets, now)
    since = now - timedelta(seconds=tally.RETENTION + 3600)
    for name in ctx.collections:
        if name in done:
            continue
        pending, n = counts_of(ctx.collection(name), name, since, until, now)
        report = ctx.report.collection(name)
        report.matched += n
        if ctx.dry_run:
            continue
        ops = tally.operations(pending) + [
            UpdateOne({"_id": tally.META}, {"$set": {f"backfilled.{name}": until}}, upsert=True)]
        buckets.bulk_write(ops, ordered=True)
        report.migrated += n


def downgrade(ctx):
    """Nothing to give back: the previous version does not read the buckets."""
