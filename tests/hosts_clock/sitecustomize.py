"""Tests only: shift this process's wall clock by ``PROC_TEST_CLOCK_SHIFT`` seconds at start-up,
as a host whose clock is wrong (``tests/system/test_hosts.py`` puts this directory on a worker's
PYTHONPATH). ``time.time``, ``time.time_ns`` and ``datetime.now``/``utcnow`` are shifted; the
monotonic clocks and ``time.sleep`` are left alone (libfaketime breaks ``time.sleep`` here)."""
import os

_shift = float(os.environ.get("PROC_TEST_CLOCK_SHIFT") or 0)

if _shift:
    import datetime as _datetime
    import time as _time

    _real_time, _real_time_ns = _time.time, _time.time_ns
    _time.time = lambda: _real_time() + _shift
    _time.time_ns = lambda: _real_time_ns() + int(_shift * 1e9)
    _base = _datetime.datetime

    class _ShiftedDatetime(_base):
        @classmethod
        def now(cls, tz=None):
            return _base.now(tz) + _datetime.timedelta(seconds=_shift)

        @classmethod
        def utcnow(cls):
            return _base.utcnow() + _datetime.timedelta(seconds=_shift)

        @classmethod
        def today(cls):
            return cls.now()

    _datetime.datetime = _ShiftedDatetime
