"""``procctl serve``: the check-status page and the JSON API as a server process of its own.

Production runs gunicorn (through its Python API, loading ``api.wsgi:app``); ``--dev``
runs Flask's development server. Either way the server needs a real MongoDB (the
embedded one lives inside a single process: run ``procctl demo`` for that), its settings
must pass ``api.settings`` (a token of at least 32 visible ASCII characters, ...), and it
refuses to listen on anything but the loopback address while no token is configured.
``--certfile``/``--keyfile`` serve HTTPS; without them, off loopback, it says to terminate
TLS in front (the token would cross the network in clear).
"""
from __future__ import annotations

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
    from api.guard import is_loopback_address

    return host == "localhost" or (bool(host) and is_loopback_address(host))


def check_app_settings() -> None:
    """The app's settings (``api.settings``), checked before anything listens."""
    from api import settings

    settings.load()


def check_bind(host: str) -> None:
    if not is_loopback(host) and not config.get().api_token:
        raise ConfigurationError(
            f"refusing to listen on {host}: no PROC_API_TOKEN is set, so anyone who can reach this "
            "address could see every process and reset, redispatch or cancel them. Set PROC_API_TOKEN "
            "(at least 32 random characters) or bind 127.0.0.1 (the default).")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than loopback needs PROC_API_TOKEN.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per gunicorn worker (inspect calls wait on the broker).")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
              help="TLS certificate (PEM): serve HTTPS. Needs --keyfile.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False),
              help="TLS private key (PEM) of --certfile.")
def serve(host, port, dev, workers, threads, certfile, keyfile):
    """Serve the check-status page, the JSON API, /healthz and /metrics (needs a real MongoDB)."""
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together (the certificate and its key)")
    check_app_settings()
    check_bind(host)
    scheme = "https" if certfile else "http"
    if not certfile and not is_loopback(host):
        click.echo(f"warning: serving plain HTTP on {host}: the token crosses the network in clear. "
                   "Give --certfile/--keyfile, or terminate TLS in a reverse proxy in front "
                   "(see PROC_TRUSTED_PROXIES).", err=True)
    # gunicorn forks its workers from this process: no MongoClient may cross that fork.
    # Each worker loads api.wsgi, which checks again and connects on its own.
    check_can_serve(disconnect=not dev)
    if dev:
        from api import create_app

        click.echo(f"check-status page: {scheme}://{host}:{port}/projects/admin/check-status/ (development server)")
        create_app().run(host=host, port=port, debug=False, use_reloader=False,
                         ssl_context=(certfile, keyfile) if certfile else None)
        return
    click.echo(f"check-status page: {scheme}://{host}:{port}/projects/admin/check-status/ "
               f"(gunicorn, {workers} workers x {threads} threads)")
    tls = {"certfile": certfile, "keyfile": keyfile} if certfile else {}
    GunicornServer({"bind": f"{host}:{port}", "workers": workers, "threads": threads, **tls,
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
