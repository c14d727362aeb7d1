"""Documents as the previous version of proc wrote them, for the datafix benchmark.

Each has ``tasks`` (usually a short list of names; every ``large_every``-th one 2,000 of
them), often ``current_task``, a ``tasks_status`` the datafix migrates without stopping
(CREATED, SUCCESS or FAILURE: no old worker is processing it) and sometimes an old
``process_status`` (CALLED, RUNNING, COMPLETED, null). ``_id``s cycle through ObjectIds,
strings, integers, floats and dates, so the datafix walks several BSON type brackets.
Deterministic for a given ``seed``.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta

from bson import ObjectId

IDLE_STATUSES = ("CREATED", "SUCCESS", "FAILURE")
OLD_PROCESS_STATUS = ("CALLED", "RUNNING", "COMPLETED", None)
#: Kinds of ``_id``, in turn (ObjectIds most often, as in a real collection).
ID_KINDS = ("objectid", "string", "objectid", "int", "float", "objectid", "date")
START = datetime(2024, 3, 1)


def make_id(rng: random.Random, kind: str, n: int):
    if kind == "objectid":
        return ObjectId(bytes(rng.getrandbits(8) for _ in range(12)))
    if kind == "string":
        return f"upload-{n:07d}"
    if kind == "int":
        return n
    if kind == "float":
        return n + 0.25
    if kind == "date":
        return START + timedelta(milliseconds=n)
    raise ValueError(f"unknown _id kind {kind!r}")


def upload(rng: random.Random, n: int, *, large: bool = False) -> dict:
    """One legacy ``upload`` document."""
    doc = {"_id": make_id(rng, ID_KINDS[n % len(ID_KINDS)], n),
           "name": f"upload {n}", "paths": [f"in/{n}/{j}.csv" for j in range(rng.randrange(4))],
           "create_time": START + timedelta(seconds=17 * n),
           "tasks_status": IDLE_STATUSES[n % len(IDLE_STATUSES)]}
    if large:
        doc["tasks"] = [f"step_{j:04d}" for j in range(2000)]
    elif rng.random() < 0.9:
        doc["tasks"] = [f"step_{j}" for j in range(rng.randrange(1, 7))]
    pick = rng.random()
    if pick < 0.55:
        doc["current_task"] = f"{rng.choice(('reading', 'checking', 'indexing'))} {n}"
    elif pick < 0.8:
        doc["current_task"] = None
    if rng.random() < 0.25:
        doc["errors"] = [f"error {j} of upload {n}" for j in range(1, rng.randrange(2, 4))]
    old = rng.randrange(len(OLD_PROCESS_STATUS) + 1)
    if old < len(OLD_PROCESS_STATUS):
        doc["process_status"] = OLD_PROCESS_STATUS[old]
    return doc


def uploads(count: int, *, seed: int = 11, large_every: int = 200) -> list[dict]:
    """``count`` legacy uploads, every ``large_every``-th with a 2,000-name ``tasks`` list."""
    rng = random.Random(seed)
    return [upload(rng, n, large=bool(large_every) and n % large_every == 0) for n in range(count)]
