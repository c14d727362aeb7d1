"""``@process``: mark a method of a Proc subclass as a process that runs on a Celery worker.

    class Upload(Proc):
        @process(limit=4, join="finish")
        def process_upload(self, path):
            ...

    upload.process_upload("/data/x")   # PENDING -> DISPATCHED, returns at once
    upload.block_until_complete()      # ... RUNNING -> SUCCESS

Arguments must be JSON-able and at most 64 KiB as JSON (``proc.store.caps.ARGS_BYTES``): they travel
in the Celery message and are kept on the document so a held or recovered process can be sent
again.
"""
from __future__ import annotations

import functools

from .run import dispatch
from .config import KindSettings

_SETTING_NAMES = frozenset(KindSettings.__dataclass_fields__)


class ProcessMethod:
    """The descriptor ``@process`` puts on the class."""

    is_process_method = True  # what proc.registry looks for

    def __init__(self, fn, join: str | None = None, **options):
        unknown = set(options) - _SETTING_NAMES
        if unknown:
            raise TypeError(f"@process got unknown option(s) {sorted(unknown)}; "
                            f"known: join, {', '.join(sorted(_SETTING_NAMES))}")
        KindSettings(**options)  # validate early, at import time
        self.fn = fn
        self.name = fn.__name__
        self.join = join
        self.options = options
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return BoundProcess(obj, self)

    def __repr__(self):
        return f"<process {self.name}>"


class BoundProcess:
    """``doc.some_process``: calling it starts the process on a worker."""

    def __init__(self, doc, method: ProcessMethod):
        self.doc = doc
        self.method = method

    def __call__(self, *args, **kwargs):
        return dispatch.start(self.doc, self.method.name, args, kwargs)

    def run_inline(self, *args, **kwargs):
        """Run the method body here, without status tracking (for debugging in a shell)."""
        return self.method.fn(self.doc, *args, **kwargs)

    def __repr__(self):
        return f"<process {type(self.doc).__name__}.{self.method.name} of {self.doc.pk}>"


def process(fn=None, *, join: str | None = None, **options):
    """Decorate a Proc method as a process; options are ``KindSettings`` fields.

    ``join`` names a method (of the same class) that runs once when the last child
    process started with ``self.spawn(...)`` has finished.
    """
    if fn is None:
        return lambda f: ProcessMethod(f, join=join, **options)
    return ProcessMethod(fn, join=join, **options)
