"""The database for the HTTP app: proc's one connection per process (``proc.store.db``)."""
from __future__ import annotations

from proc import registry
from proc.store import db


def init_app(app) -> None:
    """Connect this process to ``MONGODB_URI`` and import the application's Proc subclasses.

    ``proc.store.db`` keeps one connection per process, shared by every request (and, in the
    demo, by the in-process worker); there is nothing to open or close per request.
    """
    db.connect()
    registry.load_models()
