"""Shared pieces of the benchmarks: a real Redis broker, an in-process worker, op counting."""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import uuid

from proc import celeryconf, config


def redis_url() -> str:
    """CELERY_BROKER_URL, else the local Redis; exits with a clear message if none answers."""
    import redis

    url = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        sys.exit(f"benchmark needs a Redis broker: {url} did not answer ({exc}); "
                 "start redis-server or set CELERY_BROKER_URL")
    return url


def make_app(broker_url: str):
    """A Celery app on ``broker_url`` with keys under a prefix of its own."""
    app = celeryconf.make_app(config.Settings(**{**config.get().__dict__, "broker_url": broker_url}))
    options = dict(app.conf.broker_transport_options)
    options["global_keyprefix"] = f"procbench-{uuid.uuid4().hex[:8]}-"
    app.conf.broker_transport_options = options
    celeryconf.set_app(app)
    return app


@contextlib.contextmanager
def worker(app, concurrency: int = 4):
    from proc.inprocess import in_process_worker

    with in_process_worker(app, concurrency=concurrency, loglevel="ERROR", shutdown_timeout=60) as w:
        yield w


class OpCounter:
    """Counts calls of the embedded database's collection methods (each one a round trip
    on a real server)."""

    METHODS = ("find", "find_one", "find_one_and_update", "update_one", "update_many", "insert_one",
               "insert_many", "replace_one", "delete_one", "delete_many", "count_documents",
               "aggregate", "bulk_write", "distinct")

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self._saved = {}
        self._depth = threading.local()

    def __enter__(self):
        from mongomock_ng.collection import Collection

        for name in self.METHODS:
            original = getattr(Collection, name)
            self._saved[name] = original

            def counted(coll, *args, _name=name, _original=original, **kwargs):
                depth = getattr(self._depth, "n", 0)
                if depth == 0:  # count what the caller asked for, not mongomock's inner calls
                    self.counts[_name] += 1
                self._depth.n = depth + 1
                try:
                    return _original(coll, *args, **kwargs)
                finally:
                    self._depth.n = depth

            setattr(Collection, name, counted)
        return self

    def __exit__(self, *exc):
        from mongomock_ng.collection import Collection

        for name, original in self._saved.items():
            setattr(Collection, name, original)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reads(self) -> int:
        return sum(self.counts[n] for n in ("find", "find_one", "count_documents", "aggregate", "distinct"))

    def writes(self) -> int:
        return self.total - self.reads()
