"""What the broker and the workers say: queue depths and live workers (Celery inspect).

Both are asked with short timeouts so the page renders whatever they do: a broker that
does not answer is reported as unreachable, workers that do not answer the inspect
broadcast in time as "workers did not answer" (which is not the same as "no tasks").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kombu.transport import virtual

from proc.run import messaging
from proc.redact import redact_text, redact_url

log = logging.getLogger(__name__)


@dataclass
class BrokerView:
    url: str
    reachable: bool = False
    error: str | None = None
    depths: dict[str, int | None] = field(default_factory=dict)
    broker_consumers: dict[str, int | None] = field(default_factory=dict)
    """Consumers of each queue as the broker counts them: RabbitMQ answers a passive declare
    with it (no management plugin needed); Redis keeps no such count (None)."""
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
            "queues": [{"name": q, "depth": d, "consumers": self.consumers(q) if self.workers is not None else None,
                        "broker_consumers": self.broker_consumers.get(q)}
                       for q, d in sorted(self.depths.items())],
            "workers_answered": self.workers_answered,
            "workers": self.workers,
        }


def look(queues, timeout: float, *, inspect: bool = True) -> BrokerView:
    """Queue depths of ``queues`` and, if ``inspect``, the live workers."""
    app = messaging.get_app()
    view = BrokerView(url=redact_url(app.conf.broker_url))
    try:
        view.depths, view.broker_consumers = queue_counts(app, sorted(set(queues)), timeout)
        view.reachable = True
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not reachable"
        view.error = redact_text(f"{type(exc).__name__}: {exc}")
        view.depths = {q: None for q in queues}
        return view
    if inspect:
        try:
            view.workers = inspect_workers(app, timeout)
        except Exception as exc:
            log.warning("celery inspect failed: %s", redact_text(str(exc)))
    return view


def queue_depths(app, queues, timeout: float) -> dict[str, int]:
    """Messages waiting in each queue, read through kombu's channel (key prefixes respected)."""
    return queue_counts(app, queues, timeout)[0]


def queue_counts(app, queues, timeout: float) -> tuple[dict[str, int], dict[str, int | None]]:
    """Messages waiting in each queue, and its consumers as the broker counts them (None on
    Redis): one declare per queue, passive on RabbitMQ (it creates nothing)."""
    depths, consumers = {}, {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=timeout,
                               interval_max=timeout, timeout=timeout)
        channel = conn.default_channel
        for queue in queues:
            depths[queue], consumers[queue] = _counts(channel, queue)
    return depths, consumers


def _counts(channel, queue: str) -> tuple[int, int | None]:
    # kombu's virtual transports (Redis, memory) answer a declare with the queue size and
    # create nothing on Redis; their passive check ignores the Redis global_keyprefix. They
    # count no consumers. A RabbitMQ queue nobody declared yet: nothing waits, nobody consumes.
    virtual_channel = isinstance(channel, virtual.Channel)
    try:
        ok = channel.queue_declare(queue=queue, passive=not virtual_channel)
    except Exception as exc:
        if "NOT_FOUND" in str(exc):
            return 0, None if virtual_channel else 0
        raise
    return ok.message_count, None if virtual_channel else ok.consumer_count


#: How long a worker that answered the first broadcast gets to answer the counts. A worker
#: answers a broadcast that follows another one up to about 0.5 s later on Redis, so the
#: counts get at least this long; the wait ends as soon as every such worker answered.
COUNTS_WITHIN = 1.0


def counts_timeout(timeout: float) -> float:
    """How long the counts of the workers that answered are waited for: ``timeout``, at least
    ``COUNTS_WITHIN``."""
    return max(timeout, COUNTS_WITHIN)


def inspect_workers(app, timeout: float) -> list[dict] | None:
    """Live workers: name, consumed queues, active and reserved task counts; None if none answered.

    The first broadcast (queues) waits ``timeout``; the counts are asked of the workers that
    answered it only, and each call returns once they all answered, within
    ``counts_timeout(timeout)``. A count still missing then is None (the page says "no answer
    within N s")."""
    queues = app.control.inspect(timeout=timeout).active_queues()
    if not queues:
        return None
    names = sorted(queues)
    counts = app.control.inspect(timeout=counts_timeout(timeout), limit=len(names), destination=names)
    active = counts.active() or {}
    reserved = counts.reserved() or {}
    return [{"name": name,
             "queues": sorted(q.get("name") for q in queues[name] or []),
             "active": len(active[name]) if name in active else None,
             "reserved": len(reserved[name]) if name in reserved else None}
            for name in names]
