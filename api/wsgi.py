"""The WSGI entry point of a separate server process: ``gunicorn api.wsgi:app``.

It refuses the embedded database, documents in the old shape and wrong settings (a weak
token, ``FLASK_PROC_API_TOKEN``, a tunable that is not a number: ``api.settings``) before
serving. A refusal is one line on stderr, ``Error: ...``, and the worker exits with
gunicorn's "app failed to load" code, so gunicorn stops instead of starting workers that
would fail again (``procctl serve`` runs the same checks first, exit 2).
"""
import os
import sys

from proc.exceptions import ConfigurationError, DatabaseUnavailable

APP_LOAD_ERROR = 4
"""gunicorn's arbiter halts the server when a worker exits with this code."""

try:
    from api import create_app, settings
    from migrations import guard
    from proc import startup

    settings.load()  # the cheap checks first: a wrong token is named before an absent database
    startup.check_separate_process("The status page server (gunicorn api.wsgi:app)",
                                   checks=[guard.refuse_if_legacy])
    app = create_app()
except (ConfigurationError, DatabaseUnavailable) as exc:
    if not os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        raise  # imported, not served: the caller gets the error
    print(f"Error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
