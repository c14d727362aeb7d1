"""``procctl serve``: the check-status page and the JSON API as a server process of its own.

Production runs gunicorn (through its Python API, loading ``api.wsgi:app``); ``--dev``
runs Flask's development server. Either way the server needs a real MongoDB (the
embedded one lives inside a single process: run ``procctl demo`` for that), and it
refuses to listen on anything but the loopback address while no token is configured.
"""
from __future__ import annotations

import ipaddress

import click

from migrations import guard
from proc import config, startup
from proc.exceptions import ConfigurationError

WHAT = "The status page server (procctl serve)"


def check_can_serve(what: str = WHAT, *, disconnect: bool = False) -> None:
    """Refuse to start on the embedded database, an unreachable one, or documents in the old
    shape (``proc.startup``); ``disconnect`` before gunicorn forks its workers."""
    startup.check_separate_process(what, checks=[guard.refuse_if_legacy], disconnect=disconnect)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str) -> None:
    if not is_loopback(host) and not config.get().api_token:
        raise ConfigurationError(
            f"refusing to listen on {host}: no PROC_API_TOKEN is set, so anyone who can reach this "
            "address could see every process and reset, redispatch or cancel them. Set PROC_API_TOKEN "
            "(a long random string) or bind 127.0.0.1 (the default).")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than loopback needs PROC_API_TOKEN.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per gunicorn worker (inspect calls wait on the broker).")
def serve(host, port, dev, workers, threads):
    """Serve the check-status page, the JSON API, /healthz and /metrics (needs a real MongoDB)."""
    check_bind(host)
    # gunicorn forks its workers from this process: no MongoClient may cross that fork.
    # Each worker loads api.wsgi, which checks again and connects on its own.
    check_can_serve(disconnect=not dev)
    if dev:
        from api import create_app

        click.echo(f"check-status page: http://{host}:{port}/projects/admin/check-status/ (development server)")
        create_app().run(host=host, port=port, debug=False, use_reloader=False)
        return
    click.echo(f"check-status page: http://{host}:{port}/projects/admin/check-status/ "
               f"(gunicorn, {workers} workers x {threads} threads)")
    GunicornServer({"bind": f"{host}:{port}", "workers": workers, "threads": threads,
                    "worker_class": "gthread", "accesslog": "-", "timeout": 60,
                    # gunicorn's control socket defaults to one path per user, shared by every
                    # gunicorn on the machine (two servers would take each other's): off.
                    "control_socket_disable": True}).run()


def _gunicorn_base():
    from gunicorn.app.base import BaseApplication

    return BaseApplication


class GunicornServer(_gunicorn_base()):
    """gunicorn, configured from Python, serving ``api.wsgi:app`` (loaded in each worker)."""

    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from api.wsgi import app

        return app
