"""The "Where time goes" panel of the check-status page: per kind, the p50 and p95 of each
phase (``proc.machine.phases``) of the processes that ended in the last hour, as horizontal bars.

The bars are inline SVG drawn on the server (geometry computed here, colours in the page's
own stylesheet), so the panel needs no asset of its own and is refreshed in place with the
rest of the live part. Each kind's bars share one scale: its longest p95. A kind whose p95
``queued`` exceeds half its queue timeout is marked, with the reason in words.

The panel is computed at most once per ``PROC_TIMINGS_SECONDS`` (10 s) per app, however many
pages refresh every ``PROC_REFRESH_SECONDS``: an hour's quantiles move slowly. Each
computation reads the hour's time buckets (``proc.monitor.timings``: one find, O(kinds x 60)),
so the p50 and p95 are estimates within ``proc.machine.buckets.ERROR`` (the panel says so).
"""
from __future__ import annotations

import time

from flask import current_app

from proc import registry
from proc.monitor import timings
from proc.machine.phases import PHASES
from proc.timeutil import format_age

WINDOW = 3600
#: Pixels of the longest bar of a kind, and of the label column before the bars.
BAR_PX, LABEL_PX, ROW_PX = 300, 64, 22
PHASE_WORDS = {"held": "held (PENDING: a slot or the broker)", "queued": "queued (DISPATCHED: a worker)",
               "run": "run (RUNNING)", "waiting": "waiting (for child processes)"}


def seconds_text(value: float | None) -> str:
    """``0.8`` -> ``"0.80 s"``, ``31.4`` -> ``"31.4 s"``, ``240`` -> ``"4m"``; None -> ``"-"``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    return format_age(value).replace(" 0s", "").replace(" 0m", "")


def too_few_workers(queued_p95: float | None, queue_timeout: float | None) -> str | None:
    """The reason a kind is marked, or None."""
    if queued_p95 is None or not queue_timeout or queued_p95 <= queue_timeout / 2:
        return None
    return (f"workers are too few or busy: p95 wait {seconds_text(queued_p95)} against a "
            f"{seconds_text(queue_timeout)} queue timeout")


def _bars(stats: dict) -> list[dict]:
    shown = [p for p in PHASES if stats[p]["n"] and (p != "waiting" or stats[p]["p95"] is not None)]
    scale = max([stats[p]["p95"] or 0.0 for p in shown] + [1e-9])
    rows = []
    for i, phase in enumerate(shown):
        s = stats[phase]
        rows.append({"phase": phase, "words": PHASE_WORDS[phase], "n": s["n"], "y": i * ROW_PX,
                     "p50": s["p50"], "p95": s["p95"], "p50_text": seconds_text(s["p50"]),
                     "p95_text": seconds_text(s["p95"]),
                     "p50_px": max(round(BAR_PX * (s["p50"] or 0) / scale, 1), 1.0),
                     "p95_px": max(round(BAR_PX * (s["p95"] or 0) / scale, 1), 1.0)})
    return rows


def cached_panel() -> dict:
    """``panel()``, reused for ``PROC_TIMINGS_SECONDS`` by this app."""
    ttl = float(current_app.config["PROC_TIMINGS_SECONDS"])
    hit = current_app.extensions.get("proc_timings_panel")
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    found = panel()
    current_app.extensions["proc_timings_panel"] = (time.monotonic(), found)
    return found


def panel(stats: dict[str, dict] | None = None) -> dict:
    """The panel's data: ``kinds`` (with bars) and ``idle`` (kinds with no process ended)."""
    stats = timings.summary(WINDOW) if stats is None else stats
    settings = {k.name: k.settings for k in registry.kinds()}
    kinds, idle = [], []
    for name, phases in stats.items():
        ended = max(s["n"] for s in phases.values())
        if not ended:
            idle.append(name)
            continue
        bars = _bars(phases)
        queue_timeout = settings[name].queue_timeout if name in settings else None
        kinds.append({"kind": name, "ended": ended, "bars": bars, "height": len(bars) * ROW_PX,
                      "width": LABEL_PX + BAR_PX + 190, "label_px": LABEL_PX,
                      "queue_timeout": queue_timeout,
                      "marked": too_few_workers(phases["queued"]["p95"], queue_timeout)})
    return {"window_seconds": WINDOW, "kinds": kinds, "idle": idle}
