"""``procctl demo``: the demo domain on the embedded database, with its status page."""
from __future__ import annotations

import sys

import click


@click.command()
@click.option("--uploads", default=3, show_default=True, help="Uploads to process (each with child entries).")
@click.option("--projects", default=1, show_default=True, help="Projects (9 prechecks each, limit 4).")
@click.option("--pace", default=1.5, show_default=True, help="Seconds each demo step takes.")
@click.option("--concurrency", default=3, show_default=True, help="Threads of the in-process worker.")
@click.option("--port", default=5000, show_default=True, help="Port of the status page (0: any free port).")
@click.option("--no-serve", is_flag=True, help="Do not serve the status page.")
@click.option("--linger", default=None, type=float,
              help="Keep the page up this many seconds after the demo (default: 600 on a terminal, else 0).")
def demo(uploads, projects, pace, port, no_serve, linger, concurrency):
    """Run the demo processes on the embedded default, printing every status change."""
    from ..demo.run import run_demo

    if linger is None:
        linger = 600.0 if sys.stdout.isatty() else 0.0
    run_demo(uploads=uploads, projects=projects, pace=pace, port=port, serve=not no_serve, linger=linger,
             concurrency=concurrency)
