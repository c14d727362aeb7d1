"""``procctl monitor``: sweep for stuck processes and recover them (see ``proc.monitor``)."""
from __future__ import annotations

import logging
import time

import click

from migrations import guard

from .. import config, startup
from ..store import db
from .. import monitor as sweeper
from ..exceptions import DatabaseUnavailable

log = logging.getLogger(__name__)


@click.command()
@click.option("--once", is_flag=True, help="Run one sweep, print it and exit.")
@click.option("--interval", type=float, default=None,
              help="Seconds between sweeps (without --once). [default: PROC_SWEEP_INTERVAL, 60]")
def monitor(once: bool, interval: float | None):
    """Find processes stuck PENDING, DISPATCHED, RUNNING or WAITING_FOR_RESULT and recover
    them by their kind's policy (fail, retry, alert); print what was found and done.

    Without --once it keeps sweeping every --interval seconds (an alternative to Celery
    beat). A sweep the database does not answer is reported and tried again at the next
    interval: a restart of MongoDB does not end the monitor.
    """
    interval = config.get().sweep_interval if interval is None else interval
    if interval <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    startup.check_separate_process("The monitor (procctl monitor)", checks=[guard.refuse_if_legacy])
    click.echo(f"monitor: sweeping {db.uri()} every {interval:g} s" if not once else
               f"monitor: one sweep of {db.uri()}", err=True)
    while True:
        try:
            report = sweeper.sweep()
        except (DatabaseUnavailable, *db.OUTAGE_ERRORS) as exc:
            if once:
                raise
            click.echo(f"monitor: sweep skipped, the database did not answer ({type(exc).__name__}); "
                       f"trying again in {interval:g} s", err=True)
        else:
            for line in report.lines():
                click.echo(line)
        if once:
            return
        time.sleep(interval)  # the pause between sweeps, not synchronisation
