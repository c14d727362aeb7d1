"""Everything proc says to the broker: the Celery app, publishing a process's message, and
proc's Celery signal handlers (the monitor's checks are scheduled by ``proc.run.checks``).

``celery_app.py`` builds the app with ``make_app()`` and hands it over with ``set_app()``;
code that sends uses ``get_app()``. Task and queue names are in ``proc.names``.

Settings that matter for correctness:

- ``task_acks_late`` + ``task_reject_on_worker_lost`` for the monitor's tasks: a check is
  acknowledged after it ran. ``proc.run`` itself is acknowledged when a pool process takes it
  (``proc.tasks``): from its claim on, the document and the monitor own recovery, so no
  process holds a message unacknowledged for as long as it runs.
- A worker holds a message with a countdown unacknowledged until it is due. Redis delivers an
  unacknowledged message again after ``visibility_timeout`` (``PROC_VISIBILITY_TIMEOUT``,
  default 3600 s); RabbitMQ closes the channel of a consumer that holds one longer than its
  ``consumer_timeout`` (``PROC_CONSUMER_TIMEOUT`` says what the broker is set to, default
  1800 s). Every countdown proc schedules (the monitor's checks) is capped at
  ``max_countdown()`` = half the one that applies, and a check that fires early schedules
  itself again.
- The monitor's checks and sweeps travel on their own queue, ``proc.monitor``
  (``MONITOR_QUEUE``), so the depth of a process queue counts processes only. Both queues
  are in ``task_queues``: a worker started without ``-Q`` consumes both; one started with
  ``-Q`` must name ``proc.monitor`` too (at least one worker must). Each queue has its own
  routing key in the exchange ``celery``; a worker removes the monitor queue's old binding
  (key ``celery``) when it is ready (``proc.run.bindings``).
- Beat runs the monitor's sweep every ``PROC_SWEEP_INTERVAL`` seconds (default 60)
  (``beat_schedule["proc-monitor-sweep"]``; run ``celery -A celery_app beat`` next to the
  workers, or ``procctl monitor`` instead). A sweep message expires after one interval, so
  sweeps missed while no worker ran do not pile up.
- Publishing is bounded (connect/socket timeouts and a short retry policy) so a call
  never hangs on a dead broker (``publish``).
- On RabbitMQ (any ``amqp://`` broker) every publish waits for the broker's confirm
  (``confirm_publish``): ``apply_async`` returning means the broker took the message, so
  DISPATCHED means a message exists. A nack (a queue at its ``max-length`` with
  ``overflow: reject-publish``), no confirm within ``confirm_timeout`` (a memory or disk
  alarm blocks publishers: the broker stops reading their connection) or a lost connection
  is ``BrokerUnavailable``; the connection that waited is dropped without the AMQP close
  handshake, which a blocked broker would never answer (``send_task``). Redis has no
  confirms: its ``LPUSH`` reply is the acceptance.
- The monitor's checks (``proc.run.checks``): one delayed message per kind and deadline
  bucket, and a per-process message for a check that needs another look later; neither is
  ever revoked: a check of a finished process does nothing.
- proc's signal handlers (a pool process connects after the fork; a stopping worker stops
  its heartbeats; the worker that received each run message is remembered; a worker
  remembers its pool type and records a forced stop, ``proc.run.pools``; a ready worker removes
  the monitor queue's old binding, ``proc.run.bindings``) are connected
  by ``make_app()``, once, not as a side effect of importing a module.
"""
from __future__ import annotations

import logging
import threading

from bson import json_util
from celery import Celery, signals

from .. import config
from ..machine import tally
from ..store import db
from . import bindings, heartbeat, pools
from ..exceptions import BrokerUnavailable
from ..names import DEFAULT_QUEUE, EXCHANGE, MONITOR_QUEUE, RUN_TASK, SWEEP_TASK
from ..redact import redact_text, redact_url

log = logging.getLogger(__name__)

TASK_MODULES = ["proc.tasks"]


AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def is_amqp(url: str | None) -> bool:
    """Whether ``url`` names an AMQP broker (RabbitMQ)."""
    return (url or "").split("://", 1)[0].split("+", 1)[0] in AMQP_SCHEMES


def uses_confirms(app: Celery) -> bool:
    """Whether ``app`` publishes with confirms (every AMQP broker proc sends to)."""
    return is_amqp(app.conf.broker_url) and bool((app.conf.broker_transport_options or {}).get("confirm_publish"))


def confirm_timeout(timeout: float) -> float:
    """How long one publish waits for the broker's confirm: a quarter of the whole publish's
    ``timeout``, so three tries and their pauses end within it."""
    return max(0.25, timeout / 4)


def publish_retry_policy(timeout: float) -> dict:
    """Retry the publish a few times, all within about ``timeout`` seconds."""
    return {"max_retries": 2, "interval_start": 0, "interval_step": min(1.0, timeout / 4),
            "interval_max": min(1.0, timeout / 4)}


def max_countdown(app: Celery | None = None) -> float:
    """The longest countdown proc gives a message: half the broker's visibility timeout (Redis),
    half its consumer timeout (RabbitMQ, ``PROC_CONSUMER_TIMEOUT``). A worker holds a delayed
    message unacknowledged until it is due; past either timeout the broker takes it back."""
    app = app or get_app()
    if is_amqp(app.conf.broker_url):
        return float(app.conf.get("proc_consumer_timeout") or 1800) / 2
    options = app.conf.broker_transport_options or {}
    return float(options.get("visibility_timeout", 3600)) / 2


def beat_schedule(interval: float | None = None) -> dict:
    """The periodic tasks of proc: the monitor's sweep."""
    every = interval or config.get().sweep_interval
    return {"proc-monitor-sweep": {"task": SWEEP_TASK, "schedule": every,
                                   "options": {"expires": every, "queue": MONITOR_QUEUE}}}


QUEUE_TYPE_REFUSED = (
    "proc does not support quorum queues yet ({asked}): the monitor's checks are messages with a "
    "countdown, which a quorum queue holds against the worker's prefetch (quorum queues have no global "
    "QoS) unless Celery's native delayed delivery re-routes them, and that does not fit proc's direct "
    "exchange; RabbitMQ 4 also drops a message delivered 20 times. Use classic queues (leave "
    "task_default_queue_type unset, or 'classic'); docs/faults.md, \"Queue types\", gives the upgrade path")


def check_queue_type(app: Celery) -> None:
    """Refuse quorum (or any non-classic) queues: ``ConfigurationError`` (``QUEUE_TYPE_REFUSED``)."""
    value = app.conf.get("task_default_queue_type") or "classic"
    asked = [f"task_default_queue_type={value!r}"] if value != "classic" else []
    for queue in app.conf.task_queues or ():
        kind = (queue.queue_arguments or {}).get("x-queue-type", "classic")
        if kind != "classic":
            asked.append(f"x-queue-type {kind!r} on queue {queue.name}")
    if asked:
        from ..exceptions import ConfigurationError

        raise ConfigurationError(QUEUE_TYPE_REFUSED.format(asked="; ".join(asked)))


def make_app(settings: config.Settings | None = None, **overrides) -> Celery:
    s = settings or config.get()
    app = Celery("proc", include=list(TASK_MODULES), set_as_current=True)
    connect_timeout = max(0.5, min(3.0, s.dispatch_timeout / 4))
    app.conf.update(
        broker_url=s.broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=connect_timeout,
        broker_transport_options={
            "visibility_timeout": s.visibility_timeout,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": max(1.0, s.dispatch_timeout / 2),
            "max_retries": 1,
            **({"confirm_publish": True} if is_amqp(s.broker_url) else {}),
        },
        task_publish_retry=True,
        task_publish_retry_policy=publish_retry_policy(s.dispatch_timeout),
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=EXCHANGE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_queues=bindings.task_queues(),
        beat_schedule=beat_schedule(),
        proc_consumer_timeout=s.consumer_timeout,
    )
    if overrides:
        app.conf.update(**overrides)
    connect_signal_handlers()
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """The Celery app of this process: the one handed to ``set_app()`` (``celery_app.py`` does),
    else one built here from the settings."""
    global _app
    if _app is None:
        _app = make_app()
    return _app


def set_app(app: Celery | None) -> None:
    """Use ``app`` for sending from now on (tests build apps for their own broker)."""
    global _app
    _app = app


# -- publishing ------------------------------------------------------------------------------


def publish(kind, raw: dict) -> None:
    """Publish the ``proc.run`` message of ``raw``'s attempt, or raise ``BrokerUnavailable``."""
    app = get_app()
    pargs = raw.get("process_args") or {}
    message = [kind.collection, json_util.dumps(raw["_id"]), kind.method,
               pargs.get("args", []), pargs.get("kwargs", {}), raw["attempt"]]
    timeout = publish_timeout(app)
    try:
        send_task(app, RUN_TASK, timeout, args=message, task_id=raw["celery_task_id"],
                  queue=kind.settings.queue)
    except Exception as exc:  # kombu/redis raise many kinds; all mean "not accepted"
        url = redact_url(app.conf.broker_url)
        reason = redact_text(refusal(exc, app, timeout))
        log.warning("broker at %s did not accept %s %s: %s", url, kind.name, raw["_id"], reason)
        raise BrokerUnavailable(
            f"broker unreachable at {url} ({reason}); the process stays PENDING and will be sent "
            "again when the broker is back (monitor), or redispatch it") from None


def publish_timeout(app: Celery) -> float:
    """How long publishing one ``proc.run`` message may take, retries included (s)."""
    return app.conf.broker_transport_options.get("socket_timeout", 5) * 2


def send_task(app: Celery, name: str, timeout: float, **options) -> None:
    """``app.send_task(name, **options)``, retried within about ``timeout`` seconds; on an AMQP
    broker each try waits for the broker's confirm (``confirm_timeout``). Raises what the
    broker's client raised when the message was not accepted.

    The producer is acquired here so that, on a failure, its connection is dropped at once
    (``collect``: the socket is closed, no AMQP close handshake): a broker that blocks its
    publishers (memory or disk alarm) reads nothing from that connection, and the pool's
    ordinary close would wait for a ``close-ok`` forever."""
    if uses_confirms(app):
        options["confirm_timeout"] = confirm_timeout(timeout)
    with app.producer_or_acquire(None) as producer:
        try:
            app.send_task(name, producer=producer, retry=True, retry_policy=publish_retry_policy(timeout),
                          **options)
        except BaseException:
            try:
                producer.connection.collect()
            except Exception:  # already gone
                pass
            raise


def refusal(exc: BaseException, app: Celery | None = None, timeout: float | None = None) -> str:
    """What the broker did with a message it did not accept, in words (``exc`` as raised)."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if "MessageNacked" in names:
        return (f"{text}: the broker refused the message (a nack: a queue at its max-length with "
                "overflow reject-publish, or a resource alarm)")
    if app is not None and uses_confirms(app) and names & {"TimeoutError", "timeout"}:
        wait = confirm_timeout(timeout) if timeout else None
        within = f" within {wait:g} s" if wait else ""
        return (f"{text}: the broker did not confirm the message{within} (a memory or disk alarm "
                "blocks publishers; see the broker's log)")
    return text


def broker_answers(app: Celery | None = None) -> bool:
    """Whether the broker takes a connection now (one connect, bounded by the app's connect
    timeout): the monitor's sweep asks once before sending processes the broker refused."""
    app = app or get_app()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=app.conf.broker_connection_timeout)
            conn.default_channel  # noqa: B018 - opening the channel is the question
        return True
    except Exception as exc:  # kombu/redis/amqp raise many kinds; all mean "not now"
        log.info("broker at %s does not answer: %s", redact_url(app.conf.broker_url),
                 redact_text(f"{type(exc).__name__}: {exc}"))
        return False


# -- proc's Celery signal handlers ---------------------------------------------------------------

# The node name of the worker that received each proc.run message, by task id. Celery's
# thread pool reports the machine's hostname as ``request.hostname``, not the worker's node
# name; heartbeats are kept per worker (``heartbeat.stop_worker``), so the run task needs it.
_received: dict[str, str] = {}
_received_lock = threading.Lock()
_RECEIVED_MAX = 10000


def _remember_worker(sender=None, request=None, **_):
    if request is None or getattr(request, "name", None) != RUN_TASK:
        return
    with _received_lock:
        if len(_received) >= _RECEIVED_MAX:  # messages received but never run (worker stopped)
            _received.clear()
        _received[request.id] = getattr(sender, "hostname", None) or request.hostname


def receiving_worker(task_id: str) -> str | None:
    """The node name of the worker that received the message ``task_id`` (once)."""
    with _received_lock:
        return _received.pop(task_id, None)


def _connect_pool_process(**_):
    """A prefork pool process connects on its own, right after the fork (the main process
    closed its connection before forking, see ``proc.startup``). Threads and solo pools
    connect on their first task; every task asks ``db.database()`` first."""
    try:
        db.database()
    except Exception:  # connect=False makes this cheap and offline; the first task reports
        log.exception("could not set up the MongoDB connection of this pool process")


def _stop_heartbeats(sender=None, **_):
    """A worker that stopped heartbeats none of its processes any more."""
    hostname = getattr(sender, "hostname", None)
    if hostname:
        heartbeat.stop_worker(hostname)


def _flush_tally(**_):
    """A pool process (or a solo/threads worker) that shuts down sends its counts of ended
    attempts first (``proc.machine.tally``): a prefork child leaves without running ``atexit``."""
    tally.at_exit()


class _NoBackendRevokeNoise(logging.Filter):
    """Workers without a result backend log a warning for every revoke; proc revokes the
    pending monitor check of every finished process, and has no result backend by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Failed to mark task %s as revoked in backend")
                    and record.args and str(record.args[0]).endswith("-monitor"))


#: (signal, handler): what ``connect_signal_handlers`` connects, each once per process.
SIGNAL_HANDLERS = (
    (signals.task_received, _remember_worker),
    (signals.worker_process_init, _connect_pool_process),
    (signals.worker_shutdown, _stop_heartbeats),
    (signals.worker_shutdown, _flush_tally),
    (signals.worker_process_shutdown, _flush_tally),
    (signals.worker_init, pools.record_pool),
    (signals.task_revoked, pools.record_termination),
    (signals.worker_ready, bindings.unbind_legacy_on_ready),
)
_revoke_noise = _NoBackendRevokeNoise()


def connect_signal_handlers() -> None:
    """Connect proc's Celery signal handlers (idempotent: each has a dispatch uid)."""
    for signal, handler in SIGNAL_HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"proc.run.messaging.{handler.__name__}")
    control_log = logging.getLogger("celery.worker.control")
    if _revoke_noise not in control_log.filters:
        control_log.addFilter(_revoke_noise)
