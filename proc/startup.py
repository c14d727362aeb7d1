"""Checks a separate server process (worker, API server) runs before it starts serving."""
from __future__ import annotations

import logging

from . import config, db, registry
from .exceptions import ConfigurationError

log = logging.getLogger(__name__)


def require_real_database(what: str) -> None:
    """Refuse the embedded database in a process of its own: it would see none of the data."""
    if config.get().embedded_db:
        raise ConfigurationError(
            f"{what} runs as its own process, but MONGODB_URI is the embedded database "
            f"({config.get().mongodb_uri}), which lives inside a single process and would be empty "
            "here. Set MONGODB_URI=mongodb://host:27017/dbname (a real MongoDB), or run "
            "`procctl demo`, which runs workers and the status page in one process."
        )


def refuse_legacy_documents(what: str) -> None:
    """Refuse to start while documents the datafix can migrate are still in the old shape."""
    try:
        from migrations import guard
    except ImportError:  # the datafix package is not installed with this application
        return
    guard.refuse_if_legacy(what)


def check_worker_can_start() -> None:
    """Run in the worker's main process before it forks its pool."""
    require_real_database("A Celery worker")
    db.connect()
    try:
        db.ping()
        registry.load_models()
        refuse_legacy_documents("The worker")
    finally:
        # A MongoClient must not cross a fork: each pool process connects on first use.
        db.disconnect()
