"""Processes per second on Redis and on RabbitMQ (confirms on, and off), proc beside bare Celery.

The lifecycle of ``bench_lifecycle`` on three brokers side by side, each with an in-process
worker (thread pool) of its own, all three up for the whole run, the same database tier, N processes per variant, brokers and
variants interleaved over several rounds:

  (a) proc: ``doc.noop()``, every default (READY -> PENDING -> DISPATCHED -> RUNNING -> SUCCESS,
      and the per-process monitor check)
  (c) bare Celery: a no-op task, no tracking (the floor on that broker)

on: Redis (``CELERY_BROKER_URL`` if it is ``redis://``, else 127.0.0.1:6379); RabbitMQ with
publisher confirms (proc's setting on every ``amqp://`` broker: each publish waits for the
broker's ack); and RabbitMQ without them (what Celery does by default), to show what a
DISPATCHED the broker confirmed costs. RabbitMQ is ``PROC_BENCH_AMQP_URL`` if set, else a
private ``rabbitmq-server`` started for the run (own node name, free ports, no plugins).

    python -m benchmarks.bench_brokers [--n 500] [--rounds 3] [--concurrency 4] [--quick]
                                       [--tier both|embedded|real]
"""
from __future__ import annotations

import argparse
import functools
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks import bench_lifecycle as lc
from benchmarks.common import add_tier_argument, free_port, interleaved, make_app, print_tiers, redis_url, table, tiers
from proc import machine
from proc.run.inprocess import in_process_worker

DATABASE = "proc_bench_brokers"
BROKERS = (("redis", "Redis"), ("confirms", "RabbitMQ, confirms on"), ("noconfirms", "RabbitMQ, confirms off"))
VARIANTS = (("a", "(a) proc tracked lifecycle", lc.run_a), ("c", "(c) bare Celery, no tracking", lc.run_c))


@contextlib.contextmanager
def rabbitmq():
    """``PROC_BENCH_AMQP_URL``, else a private rabbitmq-server for the run (stopped at the end)."""
    if os.environ.get("PROC_BENCH_AMQP_URL"):
        yield os.environ["PROC_BENCH_AMQP_URL"]
        return
    server = next((p for p in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server") or "")
                   if p and os.access(p, os.X_OK)), None)
    if server is None:
        sys.exit("benchmark needs RabbitMQ: set PROC_BENCH_AMQP_URL or install rabbitmq-server "
                 "(scripts/install-system-deps)")
    home = tempfile.mkdtemp(prefix="proc-bench-rabbitmq-")
    port, dist = free_port(), free_port()
    with open(os.path.join(home, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n")
    with open(os.path.join(home, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    env = {**os.environ, "HOME": home, "RABBITMQ_NODENAME": f"proc-bench-{os.getpid()}@localhost",
           "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(dist),
           "RABBITMQ_MNESIA_BASE": os.path.join(home, "mnesia"), "RABBITMQ_LOG_BASE": os.path.join(home, "log"),
           "RABBITMQ_CONFIG_FILE": os.path.join(home, "rabbitmq.conf"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(home, "enabled_plugins")}
    with open(os.path.join(home, "server.log"), "wb") as log:
        proc = subprocess.Popen([server], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the private rabbitmq-server did not start (log: {home}/server.log)")
            time.sleep(0.1)
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:  # the whole group: the script and the Erlang VM it started
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
        shutil.rmtree(home, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            s.settimeout(2)
            return s.recv(1) == b"\x01"
    except OSError:
        return False


def broker_app(key: str, urls: dict):
    app = make_app(urls["redis" if key == "redis" else "amqp"])
    if key == "noconfirms":
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, "confirm_publish": False}
    return app


def run_tier(tier, n: int, rounds: int, concurrency: int, urls: dict) -> dict:
    """Each broker and variant, interleaved over ``rounds``, on one tier."""
    tier.connect(DATABASE)
    apps = {b: broker_app(b, urls) for b, _ in BROKERS}
    with contextlib.ExitStack() as stack:  # one worker per broker, all up for the whole run
        for b, app in apps.items():  # node names of their own (two share one RabbitMQ)
            stack.enter_context(in_process_worker(app, concurrency=concurrency, loglevel="ERROR",
                                                  shutdown_timeout=60, hostname=f"bench-{b}@localhost"))
        for b, app in apps.items():  # warm up each broker's connections and queues
            with _using(app):
                for _, _, fn in VARIANTS:
                    fn(min(20, n))
        median = interleaved(tier.name, rounds, {(b, v): functools.partial(_in, apps[b], fn, n)
                                                  for b, _ in BROKERS for v, _, fn in VARIANTS},
                             lambda key: f"{key[0]}/{key[1]}")
    for app in apps.values():
        app.close()
    tier.drop(DATABASE)
    return median


def _in(app, fn, n: int) -> float:
    with _using(app):
        return fn(n)


@contextlib.contextmanager
def _using(app):
    from proc.run import messaging

    messaging.set_app(app)
    try:
        yield
    finally:
        messaging.set_app(None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="processes per broker, variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="--n 200 --rounds 1")
    add_tier_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 200, 1
    configured = os.environ.get("CELERY_BROKER_URL", "")
    if not configured.startswith("redis"):
        os.environ.pop("CELERY_BROKER_URL", None)
    machine.listeners.append(lc._on_transition)
    results = {}
    with rabbitmq() as amqp, tiers(args.tier) as found:
        urls = {"redis": redis_url(), "amqp": amqp}
        print("Processes per second per broker, one lifecycle per process; tiers:")
        print_tiers(found)
        for tier in found:
            results[tier.name] = run_tier(tier, args.n, args.rounds, args.concurrency, urls)
        names = [t.name for t in found]
    print()
    print(f"{args.rounds} round(s) interleaved, median rates (processes/s); {args.n:,} processes per broker, "
          f"variant and round; worker: {args.concurrency} threads in this process")
    headers = [""] + [f"{name}: {label}" for name in names for _, label in BROKERS]
    rows = [[label] + [f"{results[name][(b, v)]:.1f}" for name in names for b, _ in BROKERS]
            for v, label, _ in VARIANTS]
    rows.append(["ratio (a)/(c)  (proc vs. bare Celery on that broker)"]
                + [f"{results[name][(b, 'a')] / results[name][(b, 'c')]:.2f}x" for name in names for b, _ in BROKERS])
    print(table(headers, rows))
    print()
    compare = []
    for name in names:
        r = results[name]
        compare.append([f"{name}: (a) RabbitMQ confirms on / Redis", f"{r[('confirms', 'a')] / r[('redis', 'a')]:.2f}x"])
        compare.append([f"{name}: (a) RabbitMQ confirms on / off (the cost of confirms, proc)",
                        f"{r[('confirms', 'a')] / r[('noconfirms', 'a')]:.2f}x"])
        compare.append([f"{name}: (c) RabbitMQ confirms on / off (the cost of confirms, bare Celery)",
                        f"{r[('confirms', 'c')] / r[('noconfirms', 'c')]:.2f}x"])
    print(table(["", "ratio"], compare))


if __name__ == "__main__":
    main()
