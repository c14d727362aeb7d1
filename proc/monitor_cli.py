"""``procctl monitor``: sweep for stuck processes and recover them (see ``proc.monitor``)."""
from __future__ import annotations

import time

import click

from . import monitor as sweeper
from . import startup


@click.command()
@click.option("--once", is_flag=True, help="Run one sweep, print it and exit.")
@click.option("--interval", type=float, default=sweeper.DEFAULT_SWEEP_INTERVAL, show_default=True,
              help="Seconds between sweeps (without --once).")
def monitor(once: bool, interval: float):
    """Find processes stuck PENDING, DISPATCHED, RUNNING or WAITING_FOR_RESULT and recover
    them by their kind's policy (fail, retry, alert); print what was found and done.

    Without --once it keeps sweeping every --interval seconds (an alternative to Celery beat).
    """
    if interval <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    startup.check_separate_process("The monitor (procctl monitor)")
    while True:
        report = sweeper.sweep()
        for line in report.lines():
            click.echo(line)
        if once:
            return
        time.sleep(interval)  # the pause between sweeps, not synchronisation

