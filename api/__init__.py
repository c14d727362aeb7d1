"""The HTTP side of proc: the check-status page, the JSON API, /healthz and /metrics.

``create_app()`` is the factory (``flask --app api run`` finds it). It works on any
database, the embedded one included, so the demo can serve the page from its own
process; the entry points that run the server as a process of its own (``procctl
serve``, ``api.wsgi`` for gunicorn) refuse the embedded database before calling it.
"""
from __future__ import annotations

from flask import Flask

from proc import config as proc_config


def create_app(test_config: dict | None = None) -> Flask:
    """Build the Flask app: defaults, then ``FLASK_*`` environment variables, then ``test_config``."""
    app = Flask(__name__)
    app.config.from_mapping(
        # Every /api/ and /projects/admin/ route requires this token when it is set.
        PROC_API_TOKEN=proc_config.get().api_token,
        # Seconds a Celery inspect broadcast waits for workers to answer.
        PROC_INSPECT_TIMEOUT=0.5,
        # Seconds between two in-place refreshes of the check-status page.
        PROC_REFRESH_SECONDS=2,
        # The page's "Where time goes" panel is computed at most once per this many seconds.
        PROC_TIMINGS_SECONDS=10,
        # Processes per page in lists (``limit`` default of /api/procs).
        PROC_PAGE_SIZE=50,
        # At most this many entries in the needs-attention list.
        PROC_ATTENTION_LIMIT=200,
        # The recently-recovered list: the monitor's recoveries of the last this many hours,
        # at most PROC_RECOVERY_LIMIT of them.
        PROC_RECOVERY_HOURS=24,
        PROC_RECOVERY_LIMIT=50,
        # At most this many processes per bulk action (POST /api/procs/bulk).
        PROC_BULK_LIMIT=proc_config.get().bulk_limit,
        JSON_SORT_KEYS=False,
    )
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False

    from . import auth, bulk_api, database, errors, health, json_api, page, timings

    database.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(page.bp)
    app.register_blueprint(json_api.bp)
    app.register_blueprint(bulk_api.bp)
    app.register_blueprint(timings.bp)
    app.register_blueprint(health.bp)
    return app
