"""What the broker and the workers say: queue depths and live workers (Celery inspect).

Both are asked with short timeouts so the page renders whatever they do: a broker that
does not answer is reported as unreachable, workers that do not answer the inspect
broadcast in time as "workers did not answer" (which is not the same as "no tasks").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kombu.transport import virtual

from proc import messaging
from proc.redact import redact_url

log = logging.getLogger(__name__)


@dataclass
class BrokerView:
    url: str
    reachable: bool = False
    error: str | None = None
    depths: dict[str, int | None] = field(default_factory=dict)
    workers: list[dict] | None = None
    """None when no worker answered the inspect broadcast in time."""

    @property
    def workers_answered(self) -> bool:
        return self.workers is not None

    def consumers(self, queue: str) -> list[str]:
        return [w["name"] for w in self.workers or [] if queue in w["queues"]]

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "error": self.error,
            "queues": [{"name": q, "depth": d, "consumers": self.consumers(q) if self.workers is not None else None}
                       for q, d in sorted(self.depths.items())],
            "workers_answered": self.workers_answered,
            "workers": self.workers,
        }


def look(queues, timeout: float, *, inspect: bool = True) -> BrokerView:
    """Queue depths of ``queues`` and, if ``inspect``, the live workers."""
    app = messaging.get_app()
    view = BrokerView(url=redact_url(app.conf.broker_url))
    try:
        view.depths = queue_depths(app, sorted(set(queues)), timeout)
        view.reachable = True
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not reachable"
        view.error = redact_url(f"{type(exc).__name__}: {exc}")
        view.depths = {q: None for q in queues}
        return view
    if inspect:
        try:
            view.workers = inspect_workers(app, timeout)
        except Exception as exc:
            log.warning("celery inspect failed: %s", redact_url(str(exc)))
    return view


def queue_depths(app, queues, timeout: float) -> dict[str, int]:
    """Messages waiting in each queue, read through kombu's channel (key prefixes respected)."""
    depths = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=timeout,
                               interval_max=timeout, timeout=timeout)
        channel = conn.default_channel
        for queue in queues:
            depths[queue] = _depth(channel, queue)
    return depths


def _depth(channel, queue: str) -> int:
    # kombu's virtual transports (Redis, memory) answer a declare with the queue size and
    # create nothing on Redis; their passive check ignores the Redis global_keyprefix.
    passive = not isinstance(channel, virtual.Channel)
    try:
        return channel.queue_declare(queue=queue, passive=passive).message_count
    except Exception as exc:
        if "NOT_FOUND" in str(exc):
            return 0
        raise


def inspect_workers(app, timeout: float) -> list[dict] | None:
    """Live workers: name, consumed queues, active and reserved task counts; None if none answered."""
    queues = app.control.inspect(timeout=timeout).active_queues()
    if not queues:
        return None
    fast = app.control.inspect(timeout=timeout, limit=len(queues), destination=list(queues))
    active = fast.active() or {}
    reserved = fast.reserved() or {}
    return [{"name": name,
             "queues": sorted(q.get("name") for q in queues[name] or []),
             "active": len(active[name]) if name in active else None,
             "reserved": len(reserved[name]) if name in reserved else None}
            for name in sorted(queues)]
