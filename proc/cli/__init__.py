"""``procctl``: the command line of proc (also ``python -m proc``).

Every command is a thin wrapper over a function usable from Python.
"""
from __future__ import annotations

import logging

import click

from .. import config, db
from ..exceptions import ConfigurationError, DatabaseUnavailable


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


from migrations.cli import datafix  # noqa: E402  (the commands below build on the group above)

from . import admin, demo, monitor, serve, shell, standalone, worker  # noqa: E402

for command in (demo.demo, shell.shell, worker.worker, standalone.standalone, serve.serve,
                monitor.monitor, datafix, admin.admin):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="procctl")
