"""``procctl datafix ...`` (also ``python -m migrations ...``): thin wrappers over ``command``.

Exit codes: 0 done; 1 failed, refused, invalid documents found, or an applied file
changed; 2 usage or configuration error (bad input: nothing is written); 3 another run
holds the lock.
"""
from __future__ import annotations

import json
import logging
import sys

import click

from proc import config
from proc.store import db
from proc.timeutil import InvalidDuration, format_duration, parse_duration
from proc.exceptions import ConfigurationError, DatabaseUnavailable

from . import command, history
from .errors import LockHeld
from .progress import Bar, Lines
from .arguments import MAX_BATCH_SIZE
from .runner import DEFAULT_BATCH_SIZE

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


class DatafixGroup(click.Group):
    """Exit code 3 for a held lock, 2 for a configuration error, each with a one-line message.

    Not a ``proc.cli.ProcGroup`` subclass: ``python -m migrations`` must not import
    ``proc.cli``, which imports this module to mount it.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (LockHeld, ConfigurationError, DatabaseUnavailable) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_LOCKED if isinstance(exc, LockHeld) else EXIT_USAGE)
        except db.OUTAGE_ERRORS as exc:
            click.echo(f"Error: {db.unavailable(exc, 'running this command')}", err=True)
            ctx.exit(EXIT_USAGE)


@click.group(name="datafix", cls=DatafixGroup)
@click.option("--uri", envvar="MONGODB_URI", default=None, help="MongoDB URI (default: MONGODB_URI).")
@click.option("--versions", envvar="PROC_DATAFIX_VERSIONS", default=None, metavar="DIR[:DIR...]",
              help="The application's datafix directories, ':'-separated (default: "
                   "PROC_DATAFIX_VERSIONS); each names its sequence in sequence.txt. proc's own "
                   "migrations/versions (sequence 'proc') is always included and runs first.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.pass_context
def datafix(ctx, uri, versions, verbose):
    """Versioned datafixes that migrate existing Proc documents in place (docs/datafix.md)."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO)
    if uri:
        config.configure(mongodb_uri=uri)
    ctx.obj = {"versions": versions}


def _progress():
    return Bar() if sys.stderr.isatty() else Lines(sys.stderr)


def _finish(result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render(result))
    click.get_current_context().exit(EXIT_OK if result.ok else EXIT_FAILED)


def render(result) -> str:
    """The human-readable report of a command's result."""
    data = result.to_dict()
    lines = []
    if data["dry_run"]:
        lines.append("DRY RUN: nothing was written (no documents, ledger, backups or lock).")
    lines.extend(f"error: {e}" for e in data["errors"])
    lines.append(f"collections: {', '.join(data['collections']) or 'none'}")
    for d in data["datafixes"]:
        lines.append(f"datafix {d['id']} {d['description']}: {d['state']}")
        if d.get("refused"):
            lines.append(f"  STOPPED: {d['refused']}")
        if d.get("error"):
            lines.append(f"  error: {d['error']}")
        for name, c in d["collections"].items():
            counts = ", ".join(f"{k} {c[k]}" for k in ("remaining", "matched", "migrated", "restored",
                                                       "converted", "skipped", "invalid", "processing")
                               if c.get(k))
            lines.append(f"  {name}: {counts or 'nothing'}")
            for label, n in (c.get("rows") or {}).items():
                sample = ", ".join(map(str, (c.get("samples") or {}).get(label, [])))
                lines.append(f"    {label}: {n} (e.g. {sample})")
            for doc in c.get("invalid_docs", []):
                values = ", ".join(f"{k}={v!r}" for k, v in doc.items() if k != "_id")
                lines.append(f"    invalid _id {doc['_id']}: {values or 'no status field'}")
            for doc in c.get("converted_docs", []):
                lines.append(f"    converted by the inverse rule: _id {doc['_id']} ({doc['reason']})")
            if c.get("processing_ids"):
                lines.append(f"    still processing, e.g. {', '.join(map(str, c['processing_ids']))}")
    lines.extend(data["messages"])
    lines.extend(f"warning: {w}" for w in data["warnings"])
    return "\n".join(lines)


def _confirm(what: str, yes: bool, dry_run: bool) -> None:
    if not (yes or dry_run):
        click.confirm(f"{what} on {config.get().mongodb_uri.split('@')[-1]}? (back up the database "
                      "first; --yes skips this question)", abort=True)


@datafix.command("upgrade")
@click.option("--to", "to", default=None,
              help="Apply datafixes up to VERSION (0001 or sequence:id) in run order only.")
@click.option("--batch-size", type=click.IntRange(min=1, max=MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
              show_default=True)
@click.option("--collection", "collections", multiple=True, help="Also migrate this collection.")
@click.option("--dry-run", is_flag=True, help="Write nothing; print what would happen.")
@click.option("--include-processing", is_flag=True,
              help="Mark documents still processing under the old workers FAILURE instead of stopping.")
@click.option("--allow-changed", is_flag=True,
              help="Run even though an applied datafix file changed (recorded in the ledger).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def upgrade_cmd(obj, to, batch_size, collections, dry_run, include_processing, allow_changed, yes,
                as_json):
    """Apply pending datafixes (up to --to VERSION), proc's first, each sequence in id order."""
    _confirm("Upgrade", yes, dry_run)
    _finish(command.upgrade(to=to, batch_size=batch_size, collections=collections, dry_run=dry_run,
                            include_processing=include_processing, versions=obj["versions"],
                            allow_changed=allow_changed, progress=_progress()), as_json)


@datafix.command("downgrade")
@click.option("--to", "to", default=None,
              help="Revert the datafixes after VERSION (0001 or sequence:id) in run order "
                   "(default: the newest applied one; 'base' = all).")
@click.option("--batch-size", type=click.IntRange(min=1, max=MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
              show_default=True)
@click.option("--collection", "collections", multiple=True, help="Also revert this collection.")
@click.option("--dry-run", is_flag=True, help="Write nothing; print what would happen.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def downgrade_cmd(obj, to, batch_size, collections, dry_run, yes, as_json):
    """Revert applied datafixes with id > --to, newest first."""
    _confirm("Downgrade", yes, dry_run)
    _finish(command.downgrade(to=to, batch_size=batch_size, collections=collections, dry_run=dry_run,
                              versions=obj["versions"], progress=_progress()), as_json)


def _checking_command(name: str, function, doc: str):
    """``status`` and ``verify``: read-only, one report, same options."""

    @datafix.command(name, help=doc)
    @click.option("--collection", "collections", multiple=True, help="Also check this collection.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def checking(obj, collections, as_json):
        _finish(function(collections=collections, versions=obj["versions"]), as_json)

    return checking


status_cmd = _checking_command(
    "status", command.status,
    "Each datafix, its state, and per collection the documents still to migrate and the invalid ones.")
verify_cmd = _checking_command(
    "verify", command.verify,
    "Exit 0 only if no document is in the old shape and every process_status is valid.")


@datafix.command("unlock")
@click.option("--force", is_flag=True, help="Required: release the lock whoever holds it.")
def unlock_cmd(force):
    """Release a lock left by a crashed run."""
    if not force:
        raise click.UsageError("unlock needs --force: only use it when the run holding the lock is dead")
    released = command.unlock(force=True)
    click.echo(f"released the lock held by {released.get('owner')}" if released else "no lock was held")


@datafix.command("new")
@click.argument("name")
@click.option("--sequence", default="proc", show_default=True,
              help="The sequence (directory) the file is added to.")
@click.pass_obj
def new_cmd(obj, name, sequence):
    """Create the next datafix file of a sequence (after its highest id)."""
    click.echo(f"created {command.new(name, sequence=sequence, versions=obj['versions'])}")


def _ledger_command(name: str, function, doc: str):
    """``stamp`` and ``accept``: one VERSION, one line of output."""

    @datafix.command(name, help=doc)
    @click.argument("version")
    @click.pass_obj
    def ledger_command(obj, version):
        result = function(version, versions=obj["versions"])
        click.echo("\n".join(result.messages))

    return ledger_command


stamp_cmd = _ledger_command(
    "stamp", command.stamp,
    "Mark VERSION (0001 or sequence:id) as applied without running it, for a database migrated "
    "by other means; the ledger records it as stamped, with host, user and time.")
accept_cmd = _ledger_command(
    "accept", command.accept,
    "After reviewing a change to the file of an applied VERSION, record its new checksum "
    "(the ledger keeps the old one too).")


@datafix.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history_cmd(obj, as_json):
    """Every ledger entry: version, what was done, host and user, when, documents changed, duration."""
    found = command.history(versions=obj["versions"])
    if as_json:
        click.echo(json.dumps([command._plain({k: v for k, v in r.items() if k != "order"})
                               for r in found], indent=2))
    else:
        click.echo(history.render(found))


def _duration_option(ctx, param, value):
    """The one duration syntax of the CLI and API (``proc.timeutil``), as seconds."""
    try:
        return parse_duration(value, "--older-than")
    except InvalidDuration as exc:
        raise click.BadParameter(str(exc)) from None


@datafix.command("prune-backups")
@click.option("--older-than", "seconds", callback=_duration_option, required=True, metavar="DURATION",
              help="Delete backups written more than DURATION ago: 90s, 15m, 1h, 30d, or seconds.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def prune_backups_cmd(seconds, yes):
    """Remove backups an operator no longer needs (a downgrade then uses the inverse rule)."""
    if not yes:
        click.confirm(f"Delete datafix backups older than {format_duration(seconds)}?", abort=True)
    click.echo(f"deleted {command.prune_backups(older_than_days=seconds / 86400)} backup record(s)")


def main() -> None:
    datafix(prog_name="python -m migrations")
