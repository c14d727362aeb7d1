"""The fixed, log-spaced buckets that phase durations are counted into, and the quantiles read
back from them (pure arithmetic: no database).

The bounds (seconds) split each decade from ``10**-4`` to ``10**7`` at 1, 2 and 5 times its
power of ten, and each of those three spans into equal ratios: 8 steps from 1 to 2 (ratio
``2**(1/8)`` = 1.0905), 10 from 2 to 5 (``2.5**(1/10)`` = 1.0960), 8 from 5 to 10 (1.0905):
26 buckets per decade, 286 in all, plus the zero bucket and the overflow bucket.

Invariants:

- Bucket ``i`` holds the values ``v`` with ``BOUNDS[i] < v <= BOUNDS[i + 1]``; ``ZERO`` holds
  ``v <= BOUNDS[0]`` (0.1 ms: phases are written to the millisecond, so it holds the zeros);
  ``OVERFLOW`` holds ``v > BOUNDS[-1]`` (about 116 days).
- Every bound is ``d * 10**k`` for a step ``d`` of the decade: the ``COARSE`` bounds of
  ``/metrics`` (1-2-5 values) are bounds of the fine buckets, so their cumulative counts are
  exact (``cumulative``), never interpolated.
- A quantile is the nearest-rank one (the ``ceil(q * n)``-th smallest value, as
  ``proc.monitor.timings`` always gave). Its estimate is the geometric midpoint of the bucket
  that holds that value, capped by the exact maximum; since the value and the midpoint lie in
  the same bucket, whose bounds have a ratio ``r <= RATIO``, the estimate is within a
  factor ``sqrt(r)`` of the true value: a relative error of at most ``ERROR`` (4.69%). The
  zero bucket answers 0 (off by at most 0.1 ms); the overflow bucket answers the maximum.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Mapping

#: Each decade's spans: (from, to, steps).
_SPANS = ((1, 2, 8), (2, 5, 10), (5, 10, 8))
LOW, HIGH = -4, 7


def _bounds() -> tuple[float, ...]:
    found = []
    for k in range(LOW, HIGH):
        for a, b, steps in _SPANS:
            found += [float(f"{a * (b / a) ** (j / steps):.12g}e{k}") for j in range(steps)]
    return tuple(found + [float(f"1e{HIGH}")])


#: The bucket bounds, ascending (seconds).
BOUNDS = _bounds()
ZERO, OVERFLOW = "z", "o"
#: The largest ratio of a bucket's upper to lower bound, and the relative error it allows.
RATIO = max(b / a for a, b in zip(BOUNDS, BOUNDS[1:]))
ERROR = math.sqrt(RATIO) - 1
#: The ``le`` bounds of ``proc_phase_seconds_bucket`` (each one of ``BOUNDS``), before +Inf.
COARSE = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
          2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0, 1000000.0)


def key(value: float) -> str:
    """The bucket that counts ``value`` (a string: it names a field of a bucket document)."""
    if value <= BOUNDS[0]:
        return ZERO
    i = bisect_left(BOUNDS, value) - 1
    return OVERFLOW if i >= len(BOUNDS) - 1 else str(i)


def estimate(bucket: str, top: float | None) -> float:
    """The value a quantile falling in ``bucket`` is reported as; ``top``: the exact maximum."""
    if bucket == ZERO:
        return 0.0
    if bucket == OVERFLOW:
        return float(top) if top is not None else BOUNDS[-1]
    i = int(bucket)
    mid = math.sqrt(BOUNDS[i] * BOUNDS[i + 1])
    return round(min(mid, top) if top is not None else mid, 6)


def _order(bucket: str) -> int:
    return -1 if bucket == ZERO else len(BOUNDS) if bucket == OVERFLOW else int(bucket)


def quantile(counts: Mapping[str, int], q: float, top: float | None = None) -> float | None:
    """The nearest-rank ``q`` quantile of the values counted in ``counts`` (bucket -> how
    many), within ``ERROR`` of the true one; None when nothing was counted."""
    n = sum(counts.values())
    if not n:
        return None
    rank, seen = max(math.ceil(q * n), 1), 0
    for bucket in sorted(counts, key=_order):
        seen += counts[bucket]
        if seen >= rank:
            return estimate(bucket, top)
    raise AssertionError("unreachable: the ranks add up to n")


def cumulative(counts: Mapping[str, int]) -> list[tuple[float, int]]:
    """``(le, how many values <= le)`` for each ``COARSE`` bound, exact (``le`` is a bound)."""
    edges = [bisect_left(BOUNDS, le) for le in COARSE]  # bucket i ends at BOUNDS[i + 1]
    found = []
    for le, edge in zip(COARSE, edges):
        found.append((le, sum(n for b, n in counts.items() if b == ZERO or (b != OVERFLOW and int(b) + 1 <= edge))))
    return found
