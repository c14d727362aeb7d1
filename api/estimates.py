"""Numbers shown as estimates or as counts exact up to a cap, in words, and the all-time
estimate of a collection.

The all-time figure is ``estimated_document_count`` of each Proc collection: collection
metadata on mongod (no document read; after an unclean shutdown it can be off until the
server validates the collection), a count of the documents on SecantusDB (which keeps no
such metadata: 2.1 s at 1,000,000 documents). Either way one process asks at most once per
``TOTALS_SECONDS``, however many views and scrapes there are, and only the first view of a
collection waits for the answer: once the figure is older than ``TOTALS_SECONDS`` a view gets
it as it is and one thread of the process asks again meanwhile, so no request pays for the
count after the first. The figure can lag the truth by what changed in ``TOTALS_SECONDS``
plus one count.
"""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

#: How long one process reuses a collection's estimated document count before asking again.
TOTALS_SECONDS = 60.0

_lock = threading.Lock()
_totals: dict = {}
#: The collections whose count is being asked again, and the generation of ``_totals`` (a
#: count that ``forget_estimates`` overtook is not kept).
_refreshing: set = set()
_generation = [0]


def about(n: int) -> str:
    """An estimate in words: ``"about 950"``, ``"about 12.3k"``, ``"about 9.8M"``."""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= size:
            value = n / size
            return f"about {value:.1f}{unit}" if value < 99.95 else f"about {value:.0f}{unit}"
    return f"about {n}"


def at_most(n: int, cap: int) -> str:
    """A count exact up to ``cap``: ``"9,999"``, ``"10,000"``, ``"more than 10,000"``."""
    return f"more than {cap:,}" if n > cap else f"{n:,}"


def estimated_total(cls) -> int:
    """All the documents of ``cls``'s collection, estimated (collection metadata on mongod;
    SecantusDB counts them), asked at most once per ``TOTALS_SECONDS`` per process; only the
    first call waits for it (the module's docstring)."""
    name = cls._get_collection_name()
    with _lock:
        hit = _totals.get(name)
        if hit is None:  # the first view: it waits (and the views beside it, for the one count)
            n = cls._get_collection().estimated_document_count()
            _totals[name] = (time.monotonic(), n)
            return n
        if time.monotonic() - hit[0] >= TOTALS_SECONDS and name not in _refreshing:
            _refreshing.add(name)
            threading.Thread(target=_ask_again, args=(cls, name, _generation[0]), daemon=True,
                             name=f"proc-estimate-{name}").start()
        return hit[1]


def _ask_again(cls, name: str, generation: int) -> None:
    try:
        n = cls._get_collection().estimated_document_count()
    except Exception as exc:  # the database away: the figure stays as it was, asked again later
        log.warning("the all-time estimate of %s was not refreshed (%s)", name, type(exc).__name__)
        n = None
    with _lock:
        _refreshing.discard(name)
        if n is not None and generation == _generation[0]:
            _totals[name] = (time.monotonic(), n)


def forget_estimates() -> None:
    """Drop the cached estimates (the next view asks the server again, and waits)."""
    with _lock:
        _totals.clear()
        _refreshing.clear()
        _generation[0] += 1


def _after_fork_in_child() -> None:
    """A forked web worker keeps the figures but not the threads asking again."""
    global _lock
    _lock = threading.Lock()
    _refreshing.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
