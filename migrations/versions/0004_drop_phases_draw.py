"""Remove ``phases_draw``, the sample key the ending write stored before the time buckets.

Datafix id: 0004
Created:    2026-12-05

Until the time buckets (datafix 0003) the ending write stored, on every SUCCESS or FAILURE
document, a random ``phases_draw`` number that the old timings aggregation sampled by. Nothing
reads it any more and the model no longer declares it, so a document that still has it cannot
be loaded (mongoengine refuses an undeclared field): the workers and the server refuse to start
while one is left (``migrations.guard``), naming this datafix.

upgrade: ``phases_draw`` removed from every document that has it, every other field kept; the
values go to the backup collection, batch by batch (``Context.rewrite``).

downgrade: nothing to give back: the previous version wrote the field on each ending but never
required it, and new endings give it a value again.
"""

revision = "0004"
description = "remove phases_draw (the old timings sample key) from ended documents"

FIELD = "phases_draw"

#: Every document this datafix migrates.
selector: dict = {FIELD: {"$exists": True}}
#: None it cannot: any value of the field is removed.
invalid: dict = {"_never_matches_": {"$exists": True}}
BACKUP = (FIELD,)

UPGRADE_PIPELINE = [{"$unset": [FIELD]}]


def upgrade(ctx):
    """Remove the field, with its value backed up."""
    ctx.rewrite(select=selector, backup=BACKUP, pipeline=UPGRADE_PIPELINE,
                rows={f"{FIELD} removed": {}})


def downgrade(ctx):
    """Nothing to give back (the previous version never required the field)."""
