"""Run every benchmark, each on both database tiers (``make bench``).

    python -m benchmarks [--quick] [--tier both|embedded|real] [lifecycle status sweep datafix bulk timings]

Each benchmark runs as a process of its own (``python -m benchmarks.bench_NAME``), one after
the other, so none sees another's models, connections or private server. ``--quick`` and
``--tier`` are passed on. The lifecycle benchmark needs a Redis broker (``CELERY_BROKER_URL``,
else 127.0.0.1:6379). Exits non-zero if any benchmark failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

NAMES = ("lifecycle", "status", "sweep", "datafix", "bulk", "timings")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"which benchmarks (default: all: {', '.join(NAMES)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round (each benchmark's --quick)")
    parser.add_argument("--tier", choices=("both", "embedded", "real"), default="both")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    failed = []
    for name in args.names or NAMES:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--tier", args.tier]
        if args.quick:
            command.append("--quick")
        print(f"\n=== {' '.join(['python', *command[1:]])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command)
        print(f"=== bench_{name}: exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
