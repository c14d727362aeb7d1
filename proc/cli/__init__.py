"""``procctl``: the command line of proc (also ``python -m proc``).

Every command is a thin wrapper over a function usable from Python.
"""
from __future__ import annotations

import logging

import click

from migrations.cli import datafix

from .. import config
from ..store import db
from ..exceptions import ConfigurationError, DatabaseUnavailable
from . import admin, demo, monitor, serve, shell, standalone, worker


class ProcGroup(click.Group):
    """Turns configuration errors and an unreachable database into one clear line and exit
    code 2, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ConfigurationError, DatabaseUnavailable) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except db.OUTAGE_ERRORS as exc:
            click.echo(f"Error: {db.unavailable(exc, 'running this command')}", err=True)
            ctx.exit(2)


@click.group(cls=ProcGroup)
@click.option("--uri", envvar="MONGODB_URI", help="MongoDB URI (default: the embedded database).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(uri, verbose):
    """Run, watch and repair MongoDB-tracked processes."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if uri:
        config.configure(mongodb_uri=uri)


cli.add_command(demo.demo)
cli.add_command(shell.shell)
cli.add_command(worker.worker)
cli.add_command(standalone.standalone)
cli.add_command(serve.serve)
cli.add_command(monitor.monitor)
cli.add_command(datafix)
cli.add_command(admin.admin)


def main() -> None:
    cli(prog_name="procctl")
