"""Run every benchmark, each on both database tiers (``make bench``).

    python -m benchmarks [--quick | --smoke] [--tier both|embedded|real]
                         [lifecycle status sweep datafix bulk timings calls watch brokers]

Each benchmark runs as a process of its own (``python -m benchmarks.bench_NAME``), one after
the other, so none sees another's models, connections or private server. ``--quick`` and
``--tier`` are passed on (``calls`` counts on the embedded tier only and takes no ``--tier``). ``--smoke`` runs each at the tiny sizes of ``SMOKE``: its figures
mean nothing, it shows in a minute that every benchmark still runs to its report on both
tiers (the test suite runs it). The lifecycle benchmark needs a Redis broker
(``CELERY_BROKER_URL``, else 127.0.0.1:6379); the brokers benchmark Redis too, and RabbitMQ
(``PROC_BENCH_AMQP_URL``, else a private ``rabbitmq-server`` it starts). Exits non-zero if any benchmark failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks import EMBEDDED_ONLY

NAMES = ("lifecycle", "status", "sweep", "datafix", "bulk", "timings", "calls", "watch", "brokers")
#: ``--smoke``: per benchmark, sizes that run every code path of it in seconds.
SMOKE = {
    "lifecycle": ["--n", "20", "--real-n", "20", "--rounds", "1", "--concurrency", "2"],
    "status": ["--sizes", "200", "--repeat", "1"],
    "sweep": ["--processes", "200", "--stuck", "10", "--repeat", "1"],
    "datafix": ["--sizes", "100,200"],
    "bulk": ["--processes", "60", "--real-loop", "20", "--list-processes", "200"],
    "timings": ["--sizes", "200", "--repeat", "1"],
    "calls": ["--n", "20", "--rounds", "1"],
    "watch": ["--olds", "100", "1000", "--live", "40", "100", "--repeat", "1"],
    "brokers": ["--n", "20", "--rounds", "1", "--concurrency", "2"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"which benchmarks (default: all: {', '.join(NAMES)})")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes, one round (each benchmark's --quick)")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes: only that every benchmark still runs")
    parser.add_argument("--tier", choices=("both", "embedded", "real"), default="both")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    failed = []
    for name in args.names or NAMES:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}"]
        if name in EMBEDDED_ONLY and args.tier == "real":
            print(f"\n=== bench_{name}: skipped (the embedded tier only)", flush=True)
            continue
        if name not in EMBEDDED_ONLY:
            command += ["--tier", args.tier]
        if args.quick:
            command.append("--quick")
        if args.smoke:
            command += SMOKE[name]
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
