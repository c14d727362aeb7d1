"""The filter options of ``procctl admin reset | redispatch | cancel``: the bulk form.

``--status`` (repeatable, or comma-separated), ``--kind``, ``--older-than``, ``--newer-than``
and ``-q`` select processes (``proc.ops.filters``); ``--all`` (alone) selects every process, as
``{"all": true}`` does in the API (``bulk.parse_filter``): no filter at all is never every
process. ``--dry-run`` shows what would change,
``--yes`` skips the question. Without ``--yes`` the dry run's count is shown and the
operator asked (``click.confirm``); a refusal changes nothing. A malformed filter or a
filter matching more than ``PROC_BULK_LIMIT`` exits 2, having written nothing.
"""
from __future__ import annotations

import click

from .. import registry
from ..ops import bulk
from ..store import db

SHOWN = 20
FILTER_NAMES = ("status", "kind", "older_than", "newer_than", "q", "all")
OPTION_NAMES = FILTER_NAMES + ("dry_run", "yes")


def options() -> list[click.Option]:
    return [
        click.Option(["--status"], multiple=True, metavar="STATUS",
                     help="Act on processes in this status (repeat, or FAILURE,PENDING)."),
        click.Option(["--kind"], metavar="KIND", help="collection or collection.method."),
        click.Option(["--older-than"], metavar="DURATION",
                     help="Last status change longer ago than this (90s, 15m, 1h, 2d or seconds)."),
        click.Option(["--newer-than"], metavar="DURATION", help="Last status change within this."),
        click.Option(["-q", "q"], metavar="TEXT",
                     help="Text in the step or the errors (case-insensitive, plain text)."),
        click.Option(["--all", "all"], is_flag=True,
                     help="Act on every process (alone: a filter option selects by itself)."),
        click.Option(["--dry-run"], is_flag=True, help="Show what would change; change nothing."),
        click.Option(["--yes"], is_flag=True, help="Do not ask before acting on the matches."),
    ]


def split(values: dict) -> tuple[dict, dict]:
    """(the bulk options given, the other options), removing the bulk ones from ``values``."""
    given = {name: values.pop(name, None) for name in OPTION_NAMES}
    return given, values


def wanted(given: dict) -> bool:
    return any(given.get(name) for name in FILTER_NAMES)


def run(action: str, given: dict, *, by: str, force: bool = False, **single_only) -> None:
    """``single_only``: options of the one-process form (e.g. ``--terminate``), refused here."""
    for name, value in single_only.items():
        if value:
            raise click.UsageError(f"--{name.replace('_', '-')} is for one process (COLLECTION ID), "
                                   "not for filter options")
    db.connect()
    registry.load_models()
    data = {name: given[name] for name in FILTER_NAMES if given.get(name)}
    if "status" in data:
        data["status"] = list(data["status"])
    try:
        chosen = bulk.parse_filter(data)
    except bulk.BulkError as exc:
        raise click.BadParameter(str(exc).replace('{"all": true}', "--all"),
                                 param_hint=f"--{exc.field.replace('_', '-')}") from None
    try:
        plan = bulk.plan(action, chosen, force=force)
    except bulk.BulkTooLarge as exc:
        raise click.UsageError(str(exc)) from None
    _show_plan(action, plan)
    if given["dry_run"] or not plan.eligible:
        return
    if not given["yes"]:
        click.confirm(f"{action} {len(plan.eligible)} process(es)?", abort=True)
    try:
        result = bulk.run(action, chosen, by=by, force=force)
    except bulk.BulkTooLarge as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{action}: {result.changed} changed, {len(result.skipped)} skipped (by {by})")
    _show_skipped(result.skipped)


def _show_plan(action: str, plan: bulk.Plan) -> None:
    eligible = plan.eligible
    click.echo(f"{action}: {len(plan.matches)} matching, {len(eligible)} would change")
    for m in eligible[:SHOWN]:
        raw = m.raw
        error = (raw.get("errors") or [""])[-1]
        click.echo(f"  {m.collection}/{m.id}  {m.kind.name if m.kind else m.collection}  "
                   f"{raw.get('process_status')}  attempt {raw.get('attempt', 0)}" + (f"  {error}" if error else ""))
    if len(eligible) > SHOWN:
        click.echo(f"  ... and {len(eligible) - SHOWN} more")
    _show_skipped([m.skipped() for m in plan.matches if m.reason])


def _show_skipped(skipped: list[dict]) -> None:
    if skipped:
        click.echo(f"skipped {len(skipped)}:")
    for item in skipped[:SHOWN]:
        click.echo(f"  {item['collection']}/{item['id']}: {item['reason']}")
    if len(skipped) > SHOWN:
        click.echo(f"  ... and {len(skipped) - SHOWN} more")
