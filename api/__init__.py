"""The HTTP side of proc: the check-status page, the JSON API, /healthz and /metrics.

``create_app()`` is the factory (``flask --app api run`` finds it). It works on any
database, the embedded one included, so the demo can serve the page from its own
process; the entry points that run the server as a process of its own (``procctl
serve``, ``api.wsgi`` for gunicorn) refuse the embedded database before calling it.
"""
from __future__ import annotations

from flask import Flask

from . import settings


def create_app(test_config: dict | None = None) -> Flask:
    """Build the Flask app: defaults, then ``FLASK_*`` environment variables, then ``test_config``.

    The settings are checked first (``api.settings``): a wrong one raises ``StartupRefused``
    before anything is served. Every request then passes ``api.guard`` (Host, client address,
    body size) and ``api.auth`` (token, cross-site checks), whatever server runs the app.
    """
    app = Flask(__name__)
    app.config.from_mapping(settings.load(test_config))
    app.json.sort_keys = False

    from . import auth, bulk_api, database, errors, guard, health, json_api, page, timings

    guard.init_app(app)
    database.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(page.bp)
    app.register_blueprint(json_api.bp)
    app.register_blueprint(bulk_api.bp)
    app.register_blueprint(timings.bp)
    app.register_blueprint(health.bp)
    return app
