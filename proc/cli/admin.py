"""``procctl admin``: reset, redispatch or cancel one process from the command line, or every
process a filter matches (``proc.cli.bulk``: ``--status``, ``--kind``, ``--older-than``, ...).

Each action is recorded in the process's history with ``by="cli:<os user>"``. Giving both
``COLLECTION ID`` and filter options, or neither, is a usage error (exit 2).
"""
from __future__ import annotations

import getpass

import click

from .. import registry
from ..ops import admin as single
from ..ops.filters import parse_id
from ..store import db
from . import bulk as bulk_options
from ..exceptions import IllegalTransition, ProcError, ProcessHealthy, TransitionConflict, UnknownKind


def actor(where: str = "cli") -> str:
    """Who an operator's action is recorded as: ``<where>:<login name>`` (``getpass``)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (some containers)
        user = "unknown"
    return f"{where}:{user}"


@click.group()
def admin():
    """Repair processes: reset, redispatch or cancel one, or all a filter matches (recorded in
    their history)."""


def _run(action, collection: str, id_text: str, **kwargs) -> None:
    db.connect()
    registry.load_models()
    try:
        cls = registry.class_for(collection)
    except UnknownKind as exc:
        raise click.BadParameter(str(exc), param_hint="COLLECTION") from None
    try:
        pk = parse_id(cls, id_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ID") from None
    try:
        done = action(collection, pk, by=actor(), **kwargs)
    except (LookupError, ProcessHealthy, IllegalTransition, TransitionConflict, ProcError) as exc:
        raise click.ClickException(str(exc)) from None
    after = done.after
    click.echo(f"{collection}/{id_text}: {after['process_status']} (attempt {after['attempt']})")
    for plan in done.stops:
        click.echo(f"  terminate {plan.collection}/{plan.id} attempt {plan.attempt}: {plan.outcome}: {plan.detail}")


def _add(name: str, action, help: str, *, force: bool) -> None:
    params = [click.Argument(["collection"], required=False), click.Argument(["id"], required=False)]
    if force:
        params.append(click.Option(["--force"], is_flag=True, help="Act even on a healthy running "
                                   "process (default: only stuck or failed ones)."))
    else:
        params.append(click.Option(["--terminate"], is_flag=True, help="Also stop code that does not "
                                   "stop on its own: after PROC_CANCEL_GRACE seconds (default 30) its "
                                   "prefork pool process is terminated. Threads and solo pools cannot."))
    params += bulk_options.options()

    def callback(collection, id, **options):
        given, options = bulk_options.split(options)
        if bulk_options.wanted(given):
            if collection or id:
                raise click.UsageError("give either COLLECTION ID or filter options (--status, --kind, "
                                       "--older-than, --newer-than, -q, --all), not both")
            bulk_options.run(name, given, by=actor(), **options)
            return
        if not (collection and id) or given["dry_run"]:
            raise click.UsageError("give COLLECTION ID of one process, or filter options (--status, "
                                   "--kind, --older-than, --newer-than, -q) for every process they match, "
                                   "or --all for every process"
                                   + ("; --dry-run goes with filter options" if given["dry_run"] else ""))
        _run(action, collection, id, **options)

    admin.add_command(click.Command(name, callback=callback, params=params, help=help + (
        " Either COLLECTION ID, or filter options for every process they match (shows the count "
        "and asks first, unless --yes).")))


_add("reset", single.reset, "Put a stuck or failed process back to READY.", force=True)
_add("redispatch", single.redispatch, "Send a stuck or failed process again, as a new attempt.", force=True)
_add("cancel", single.cancel, 'End a pending or running process as FAILURE "cancelled" and revoke its '
     "Celery task.", force=False)
