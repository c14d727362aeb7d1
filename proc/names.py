"""The names proc puts on the wire: Celery task names and queue names, each defined once.

They are part of the contract with messages already queued: a worker of a newer version
must still run a message an older one sent, so these strings never change.
"""
from __future__ import annotations

RUN_TASK = "proc.run"
"""The task that runs one attempt of one process."""

CHECK_TASK = "proc.monitor_check"
"""The monitor's check of one attempt, sent with a countdown to its deadline."""

BUCKET_TASK = "proc.monitor_bucket"
"""The monitor's check of every process of one kind whose deadline falls in one time bucket."""

SWEEP_TASK = "proc.monitor_sweep"
"""The monitor's periodic sweep (Celery beat sends it)."""

TERMINATE_TASK = "proc.terminate"
"""The forced stop of one cancelled attempt, sent with a countdown of ``PROC_CANCEL_GRACE``."""

DEFAULT_QUEUE = "celery"
"""The queue of process messages unless a kind names another (Celery's own default)."""

MONITOR_QUEUE = "proc.monitor"
"""The queue of the monitor's checks and sweeps, so a process queue's depth counts processes only."""

EXCHANGE = "celery"
"""The direct exchange both queues are bound to (Celery's default: the default queue's name)."""

MONITOR_ROUTING_KEY = "proc.monitor"
"""The routing key of ``MONITOR_QUEUE`` in ``EXCHANGE``: its own, so a message another tool
publishes to exchange ``celery`` with key ``celery`` reaches the default queue only. Until
0.1.0 the monitor queue was bound with key ``celery`` (``LEGACY_MONITOR_ROUTING_KEY``);
``proc.run.bindings`` removes that binding when a worker starts."""

LEGACY_MONITOR_ROUTING_KEY = "celery"
"""The routing key the monitor queue was bound with before it had its own (removed on upgrade)."""
