"""Running processes: dispatch (caller side), execution (worker side), concurrency limits,
heartbeats, children, pools, the Celery wire (``messaging``) and in-process workers.

Above ``machine`` (every status write goes through it); below ``monitor`` and ``ops``, which it
never imports."""
