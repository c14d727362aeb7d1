"""The request class of ``proc.run`` (Celery's ``Request``, named by the task in ``proc.tasks``),
in the worker's main process: it tells the worker's prefetch when a run acknowledged at its
start begins and ends (``proc.run.prefetch``), and hands a run whose claim could not be
written for want of the database back to the broker (``proc.run.intake``).
"""
from __future__ import annotations

import logging

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import Retry
from celery.worker.request import Request

from ..exceptions import ClaimNotWritten
from . import intake, prefetch

log = logging.getLogger(__name__)


class RunRequest(Request):
    def on_accepted(self, pid, time_accepted):
        super().on_accepted(pid, time_accepted)
        if not self.task.acks_late:
            prefetch.started(self.hostname, self.id)

    def on_success(self, failed__retval__runtime, **kwargs):
        prefetch.ended(self.hostname, self.id)
        return super().on_success(failed__retval__runtime, **kwargs)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        prefetch.ended(self.hostname, self.id)
        result = super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        reason = claim_not_written(exc_info)
        if reason is not None:
            try:
                intake.hand_back(self, reason)
            except Exception:  # the monitor's queue timeout sends the process again
                log.exception("could not hand the message of %s back to the broker", self.id)
        return result


def claim_not_written(exc_info) -> ClaimNotWritten | None:
    """The ``ClaimNotWritten`` a ``proc.run`` ended with (raised as a ``Retry``), if any."""
    exc = getattr(exc_info, "exception", None)
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    if isinstance(exc, Retry):
        exc = exc.exc
    return exc if isinstance(exc, ClaimNotWritten) else None
