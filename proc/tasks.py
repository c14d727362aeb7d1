"""The Celery tasks of proc. Thin: the work is in ``proc.execution``."""
from __future__ import annotations

from celery import shared_task

from . import execution


@shared_task(name="proc.run", bind=True, acks_late=True, ignore_result=True)
def run(self, collection, id_json, method, args, kwargs, attempt):
    """Run one attempt of one process (the only task proc sends for processes)."""
    return execution.run_message(collection, id_json, method, args, kwargs, attempt,
                                 hostname=self.request.hostname)
