"""``procctl datafix history``: the ledger as a list of what was done, oldest first.

One row per kept run summary of every ledger entry (applied, rolled back, failed,
stamped, accepted; the ledger's own state names), with the version, host and user,
when, documents changed and duration. An entry without summaries (written before they
existed, or whose runs were all trimmed) still gives one row from what the entry holds,
marked ``from_entry``. Rows of entries whose file is gone still appear, after the others.
"""
from __future__ import annotations

from datetime import datetime

from .ledger import RUNS_KEPT, _changed

COLUMNS = ("when", "version", "done", "direction", "host", "user", "changed", "duration_s")


def _when(row: dict):
    value = row.get("when")
    return (value is None, value if isinstance(value, datetime) else datetime.min)


def _row(label: str, entry: dict, run: dict, order: int) -> dict:
    return {"version": label, "description": entry.get("description"), "done": run.get("state"),
            "direction": run.get("direction"), "host": run.get("host"), "user": run.get("user"),
            "when": run.get("finished_at") or run.get("started_at"),
            "changed": run.get("changed"), "duration_s": run.get("duration_s"),
            "allowed_changed": bool(run.get("allowed_changed")), "error": run.get("error"),
            "order": order}


def _entry_row(label: str, entry: dict, order: int) -> dict:
    """What an entry without run summaries still says about its last run."""
    started, finished = entry.get("started_at"), entry.get("finished_at")
    duration = round((finished - started).total_seconds(), 3) \
        if isinstance(started, datetime) and isinstance(finished, datetime) else None
    run = {"state": entry.get("state"), "direction": entry.get("direction"),
           "host": entry.get("host"), "user": entry.get("user"), "finished_at": finished,
           "started_at": started, "duration_s": duration, "error": entry.get("error"),
           "changed": _changed(entry.get("collections") or []) if entry.get("collections") else None}
    return {**_row(label, entry, run, order), "from_entry": True}


def rows(entries: dict[str, dict], scripts: list) -> list[dict]:
    """Every row, by time; ``order`` is the datafix's run order (unknown files last)."""
    position = {s.label: s.position for s in scripts}
    found = []
    for label, entry in entries.items():
        order = position.get(label, len(position))
        runs = entry.get("runs") or []
        if not runs:
            found.append(_entry_row(label, entry, order))
            continue
        found.extend(_row(label, entry, run, order) for run in runs)
        if len(runs) >= RUNS_KEPT:
            found[-len(runs)]["note"] = f"older runs not kept (the last {RUNS_KEPT} are)"
    return sorted(found, key=lambda r: (_when(r), r["order"], r["version"]))


def render(found: list[dict]) -> str:
    """A plain table, one row per line."""
    if not found:
        return "the ledger is empty: no datafix was applied, stamped or rolled back here"
    header = ["when (UTC)", "version", "done", "host", "user", "changed", "duration"]
    table = [header]
    for r in found:
        when = r["when"].strftime("%Y-%m-%d %H:%M:%S") if isinstance(r["when"], datetime) else "-"
        done = r["done"] or "-"
        if r.get("direction") == "downgrade" and done == "failed":
            done = "failed (downgrade)"
        if r.get("allowed_changed"):
            done += " (allowed changed)"
        table.append([when, r["version"], done, r["host"] or "-", r["user"] or "-",
                      "-" if r["changed"] is None else str(r["changed"]),
                      "-" if r["duration_s"] is None else f"{r['duration_s']:.1f} s"])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.extend(f"note: {r['version']}: {r['note']}" for r in found if r.get("note"))
    lines.extend(f"note: {r['version']}: from the entry itself (no run summary kept)"
                 for r in found if r.get("from_entry"))
    return "\n".join(lines)
