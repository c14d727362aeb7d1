"""Two revisions' benchmarks, interleaved in one run: each ratio of the new against the old.

    python -m benchmarks.compare --old DIR --new DIR [--rounds 3] [--tier both|embedded|real]
                                 [--quick] [--timeout S] [--bench-from own|old|new] [NAME ...]

``DIR`` is a checkout with its own ``.venv`` (``make install-test``); NAME is one of
lifecycle, status, sweep, datafix, calls (default: all; calls only on the embedded tier, and
only with ``--bench-from new``: older trees lack it). For every round, benchmark and tier, the
old tree's ``benchmarks/bench_NAME.py`` runs with the old tree's Python (cwd the old tree),
then the new tree's, alternating which goes first each round, one process per run. Each
prints its ratios of proc against a naive baseline measured side by side in that process;
they are parsed from what each revision prints (the two formats differ), and per ratio the
report gives both medians over the rounds, their spread (min-max), new/old and a verdict.

``--bench-from old`` (or ``new``) measures both revisions with ONE instrument: that tree's
benchmark scripts (its ``benchmarks`` package, loaded from there by ``BENCH_FROM``) run
against each revision's own code (cwd and ``.venv`` of the revision). It compares code when
a benchmark's baselines or options changed between the revisions (the datafix's did).

Invariants:

- Every ratio compared is proc's speed over a baseline's (higher is better), so the bound is
  one-sided: FAIL when new/old < 0.90 (a loss of more than 10%); a gain of more than 10% is
  a PASS, marked. Exit status 1 on any FAIL or failed run.
- Nothing is dropped silently: a benchmark one tree lacks, a ratio only one revision prints,
  a run that exits non-zero or times out each get a row of their own.
- Both revisions get the same sizes and the same services, fresh for each run: a private
  ``redis-server`` on a free port (``CELERY_BROKER_URL``, emptied before each run) and, on
  the real tier, a private SecantusDB (``MONGODB_URI``; ``benchmarks.common.SecantusProcess``).
- A benchmark without ``--tier`` (before the two-tier benchmarks) runs as it is on the
  embedded tier; on the real tier it runs under ``REAL_SHIM``, which points its
  ``mongomock://`` URIs at the server. Its own round-trip counts only see mongomock there:
  they are not ratios and are not compared. Neither tree's code is changed.
- Either layout of ``proc/`` (flat, or in layers since ``proc/run/``) is measured with either
  tree's scripts: ``LAYOUT``, first in ``REAL_SHIM`` and ``BENCH_FROM``, serves each moved
  module (``MOVED``) under its name in the other layout.

Every run's output is kept in a log directory (printed first).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import EMBEDDED_ONLY

NAMES = ("lifecycle", "status", "sweep", "datafix", "calls")
#: Per benchmark: (size flag, real-tier size flag, {tier: size}, {tier: quick size}, other flags).
#: The lifecycle keeps its sizes with --quick: at fewer processes its rates are all noise.
SIZES = {
    "lifecycle": ("--n", "--real-n", {"embedded": 1000, "real": 300}, {"embedded": 1000, "real": 300},
                  ["--rounds", "1"]),
    "status": ("--sizes", "--real-sizes", {"embedded": 100_000, "real": 100_000},
               {"embedded": 10_000, "real": 10_000}, ["--repeat", "3"]),
    "sweep": ("--processes", "--real-processes", {"embedded": 100_000, "real": 100_000},
              {"embedded": 20_000, "real": 20_000}, ["--repeat", "3"]),
    "datafix": ("--docs", "--real-docs", {"embedded": 20_000, "real": 2_000},
                {"embedded": 5_000, "real": 1_000}, []),
    "calls": ("--n", None, {"embedded": 300}, {"embedded": 300}, ["--rounds", "1"]),
}
BOUND = 0.90

#: Where proc's modules went when proc/ became layers (old name -> new name). A benchmark
#: script imports the names of its own tree's layout; ``LAYOUT`` lets it run against code of
#: the other layout (``--bench-from``), and lets ``REAL_SHIM`` run in either.
MOVED = {
    "proc.db": "proc.store.db",
    "proc.embedded": "proc.store.embedded",
    "proc.landing": "proc.machine",
    "proc.transitions": "proc.machine.many",
    "proc.phases": "proc.machine.phases",
    "proc.dispatch": "proc.run.dispatch",
    "proc.execution": "proc.run.execution",
    "proc.limits": "proc.run.limits",
    "proc.heartbeat": "proc.run.heartbeat",
    "proc.children": "proc.run.children",
    "proc.pools": "proc.run.pools",
    "proc.messaging": "proc.run.messaging",
    "proc.inprocess": "proc.run.inprocess",
    "proc.stuck": "proc.monitor.stuck",
    "proc.recoveries": "proc.monitor.recovery",
    "proc.terminate": "proc.monitor.terminate",
    "proc.timings": "proc.monitor.timings",
    "proc.admin": "proc.ops.admin",
    "proc.bulk": "proc.ops.bulk",
    "proc.filters": "proc.ops.filters",
    "proc.settings": "proc.config",
    "proc.durations": "proc.timeutil",
}

def _exists(name: str) -> bool:
    """Whether module NAME is in this tree (not an alias)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent that is missing, or a module and not a package
        return False


def _alias(moved: dict) -> None:
    """Serve each module of MOVED under its name in the other layout, where the tree lacks it."""
    import importlib
    import sys
    import types

    import proc

    for old, new in moved.items():
        if _exists(old) and not _exists(new):
            have, want = old, new
        elif _exists(new) and not _exists(old):
            have, want = new, old
        else:
            continue
        module = importlib.import_module(have)
        parent, _, leaf = want.rpartition(".")
        if parent in sys.modules:
            package = sys.modules[parent]
        elif _exists(parent):
            package = importlib.import_module(parent)
        else:  # proc.run, proc.store, proc.ops in a tree of the flat layout
            package = sys.modules[parent] = types.ModuleType(parent)
            package.__path__ = []
            setattr(proc, parent.rpartition(".")[2], package)
        sys.modules[want] = module
        setattr(package, leaf, module)


LAYOUT = "\n".join(inspect.getsource(f) for f in (_exists, _alias)) + f"_alias({MOVED!r})\n"
"""The prelude that serves proc's modules under the names of the other layout: in a tree
that has ``proc/run/dispatch.py``, ``proc.dispatch`` is that module; in a tree that has
``proc/dispatch.py``, ``proc.run.dispatch`` is (and ``proc.run`` a package holding it).
First in ``REAL_SHIM`` and ``BENCH_FROM``; running it twice changes nothing."""

RUN = """
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
"""Runs a benchmark module as ``python -m`` would (the end of ``REAL_SHIM``; after ``BENCH_FROM``)."""

REAL_SHIM = LAYOUT + """
import os
from urllib.parse import urlsplit
from proc import config, db
base = os.environ["PROC_COMPARE_REAL_URI"].rstrip("/")
def real(uri):
    if isinstance(uri, str) and uri.startswith("mongomock://"):
        return base + "/" + (urlsplit(uri).path.lstrip("/") or "proc")
    return uri
_configure, _connect = config.configure, db.connect
def configure(**settings):
    if "mongodb_uri" in settings:
        settings["mongodb_uri"] = real(settings["mongodb_uri"])
    return _configure(**settings)
config.configure, db.connect = configure, lambda uri=None: _connect(real(uri))
""" + RUN
"""Runs a one-tier (embedded-only) benchmark against ``PROC_COMPARE_REAL_URI``: every
``mongomock://host/NAME`` given to ``config.configure`` or ``db.connect`` becomes ``URI/NAME``."""

BENCH_FROM = LAYOUT + """
import importlib.util, sys
from pathlib import Path
_package = Path(sys.argv.pop(1)) / "benchmarks"
_spec = importlib.util.spec_from_file_location("benchmarks", _package / "__init__.py",
                                               submodule_search_locations=[str(_package)])
sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sys.modules["benchmarks"])
"""
"""The prelude of ``--bench-from``: the ``benchmarks`` package comes from the directory given
as the first argument; everything else (proc, migrations, api) from the cwd and the venv,
i.e. the revision measured. Followed by ``RUN`` or ``REAL_SHIM``."""


# -- parsing what each revision prints ---------------------------------------------------------

_X = re.compile(r"(\d[\d,]*(?:\.\d+)?)x\b")
_PARENS = re.compile(r"\([^()]*\)")


def _numbers_x(rest: str) -> list[float]:
    """The ``12.3x`` figures of a line, comments in parentheses removed."""
    return [float(m.replace(",", "")) for m in _X.findall(_PARENS.sub("", rest))]


def _tier_lines(text: str, tier: str):
    """The lines of ``text`` that belong to ``tier``: a line led by another tier's name (the
    two-tier tables) is skipped; the one-tier format has no such lead."""
    for line in text.splitlines():
        lead = line.split(maxsplit=1)[0] if line.strip() else ""
        if lead in ("embedded", "real") and lead != tier:
            continue
        yield line[len(lead):] if lead == tier else line


_RATE = re.compile(r"\s*(\(a'?\)|\([bc]\))\s+\D*?((?:\s+\d+(?:\.\d+)?)+)(?:\s+processes/s)?\s*$")
#: The lifecycle's ratios, as (numerator, denominator) variants.
LIFECYCLE_RATIOS = {"(a)/(b)": ("(a)", "(b)"), "(a')/(b)": ("(a')", "(b)"), "(a)/(c)": ("(a)", "(c)")}


def parse_lifecycle(text: str, tier: str) -> dict[str, float]:
    """The ratios of the median rates each revision prints (``(a) proc tracked lifecycle 177.4
    processes/s`` in the one-tier format, a table row ``(a) proc tracked lifecycle 242.0 39.7``
    with one column per tier in the order of the table's header), which are more precise than
    the ratios it prints to two decimals (0.06 against 0.07 is not a 14% loss). Failing the
    rates, the printed ``ratio (a)/(b) = 0.94x`` (one tier) or ``ratio (a)/(b) (...) 0.94x
    0.44x`` (a column per tier)."""
    columns = ["embedded", "real"]
    for line in text.splitlines():
        words = line.split()
        if words and set(words) <= {"embedded", "real"}:
            columns = words
    rates = {}
    for line in text.splitlines():
        m = _RATE.match(line)
        if m:
            values = [float(v) for v in m.group(2).split()]
            if len(values) == 1:
                rates[m.group(1)] = values[0]
            elif len(values) == len(columns) and tier in columns:
                rates[m.group(1)] = values[columns.index(tier)]
    if all(rates.get(v) for pair in LIFECYCLE_RATIOS.values() for v in pair):
        return {name: rates[x] / rates[y] for name, (x, y) in LIFECYCLE_RATIOS.items()}
    out = {}
    for line in text.splitlines():
        m = re.search(r"ratio (\(a'?\)/\([bc]\))", line)
        if m:
            values = _numbers_x(line[m.end():])
            if len(values) == 1:
                out[m.group(1)] = values[0]
            elif len(values) == len(columns) and tier in columns:
                out[m.group(1)] = values[columns.index(tier)]
    return out


def parse_status(text: str, tier: str) -> dict[str, float]:
    """Rows with three ``N trips[,] T s`` cells (/api/status, the aggregation, the naive loop),
    after the number of processes: the ratios of the naive loop's time to each."""
    out = {}
    for line in _tier_lines(text, tier):
        times = re.findall(r"trips,?\s+(\d+\.\d+)\s?s\b", line)
        size = re.match(r"[\s|]*([\d,]+)\s", line)
        if len(times) == 3 and size:
            api, agg, naive = (float(t) for t in times)
            n = size.group(1)
            out[f"naive / aggregation time @ {n}"] = naive / agg if agg else float("inf")
            out[f"naive / /api/status time @ {n}"] = naive / api if api else float("inf")
    return out


def parse_sweep(text: str, tier: str) -> dict[str, float]:
    """``ratio naive / sweep  12.3x ... 1000x``: the time ratio, then documents read."""
    for line in _tier_lines(text, tier):
        if "ratio naive / sweep" in line:
            values = _numbers_x(line.split("ratio naive / sweep", 1)[1])
            if len(values) == 2:
                return {"naive / sweep time": values[0], "naive / sweep documents read": values[1]}
    return {}


def parse_datafix(text: str, tier: str) -> dict[str, float]:
    """``speedup vs save loop[:] (goal) 4.1x`` and ``speed vs bare update[:] (goal) 0.14x``."""
    out = {}
    for line in _tier_lines(text, tier):
        for label in ("speedup vs save loop", "speed vs bare update"):
            if label in line:
                values = _numbers_x(line.split(label, 1)[1])
                if values:
                    out[label] = values[0]
    return out


def parse_calls(text: str, tier: str) -> dict[str, float]:
    """``ratio calls (b)/(a')  1.102x`` (``bench_calls``: the embedded tier only)."""
    return {f"calls {m.group(1)}": float(m.group(2))
            for m in re.finditer(r"ratio calls (\(\w\)/\(a'\))\s+(\d+(?:\.\d+)?)x", text)}


PARSERS = {"lifecycle": parse_lifecycle, "status": parse_status, "sweep": parse_sweep,
           "datafix": parse_datafix, "calls": parse_calls}


# -- running ------------------------------------------------------------------------------------

@dataclass
class Tree:
    label: str   # "old" or "new"
    path: Path
    bench: Path | None = None  # where its benchmark scripts come from (--bench-from); None: its own

    @property
    def python(self) -> str:
        return str(self.path / ".venv" / "bin" / "python")

    @property
    def bench_root(self) -> Path:
        return self.bench or self.path

    def script(self, name: str) -> Path:
        return self.bench_root / "benchmarks" / f"bench_{name}.py"

    def has(self, name: str) -> bool:
        return self.script(name).exists()

    def two_tier(self, name: str) -> bool:
        """Whether its benchmark takes ``--tier`` (else it runs on the embedded tier only)."""
        return "add_tier_argument" in self.script(name).read_text()


@dataclass
class Result:
    ratios: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def redis_server():
    """A private redis-server (no persistence) on a free port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("benchmarks.compare needs redis-server on PATH (scripts/install-system-deps)")
    import redis

    from benchmarks.common import free_port

    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"redis-server did not answer on port {port}")
            time.sleep(0.1)
    try:
        yield url, client
    finally:
        process.terminate()
        process.wait(30)


def command(tree: Tree, name: str, tier: str, quick: bool) -> list[str]:
    flag, real_flag, sizes, quick_sizes, extra = SIZES[name]
    size = str((quick_sizes if quick else sizes)[tier])
    module = f"benchmarks.bench_{name}"
    if tree.two_tier(name):
        args, shim = [module, flag, size, real_flag, size, "--tier", tier, *extra], False
    else:
        args, shim = [module, flag, size, *extra], tier == "real"
    if tree.bench is not None and tree.bench != tree.path:
        return [tree.python, "-c", BENCH_FROM + (REAL_SHIM if shim else RUN), str(tree.bench), *args]
    if shim:
        return [tree.python, "-c", REAL_SHIM, *args]
    return [tree.python, "-m", *args]


SHOWN = {REAL_SHIM: "REAL_SHIM", BENCH_FROM + RUN: "BENCH_FROM+RUN", BENCH_FROM + REAL_SHIM: "BENCH_FROM+REAL_SHIM"}


def run_one(tree: Tree, name: str, tier: str, args, broker, log: Path) -> tuple[dict, str | None]:
    """One benchmark run: (ratios, error or None); its output goes to ``log``."""
    url, client = broker
    client.flushall()
    env = {**os.environ, "CELERY_BROKER_URL": url}
    env.pop("MONGODB_URI", None)
    cmd = command(tree, name, tier, args.quick)
    with contextlib.ExitStack() as stack:
        if tier == "real":
            from benchmarks.common import SecantusProcess  # (it registers a pymongo listener)

            server = stack.enter_context(SecantusProcess())
            env["MONGODB_URI"] = env["PROC_COMPARE_REAL_URI"] = server.url
            if not tree.two_tier(name):  # the old sweep reads MONGODB_URI itself, with its database
                env["MONGODB_URI"] = server.url + f"proc_bench_{name}"
        started = time.perf_counter()
        with open(log, "w") as out:
            out.write(" ".join(SHOWN.get(c, c) for c in cmd) + "\n\n")
            out.flush()
            process = subprocess.Popen(cmd, cwd=tree.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                return {}, f"timed out after {args.timeout:.0f} s (log {log})"
    seconds = time.perf_counter() - started
    text = log.read_text()
    if code:
        return {}, f"exit {code} (log {log})"
    ratios = PARSERS[name](text, tier)
    print(f"  {tree.label} {name} {tier}: {seconds:.0f} s: "
          + (", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) or "no ratio found"), flush=True)
    return ratios, None if ratios else f"no ratio found in its output (log {log})"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "-"


def report(results: dict) -> bool:
    """Print the table; True if every ratio passes."""
    ok = True
    rows = []
    for (name, tier), by_tree in results.items():
        old, new = by_tree["old"], by_tree["new"]
        for label, res in (("old", old), ("new", new)):
            for error in res.errors:
                rows.append([name, tier, f"({label} run)", "", "", "", "", "", f"FAIL: {error}"])
                ok = False
        for ratio in sorted(set(old.ratios) | set(new.ratios), key=lambda r: (r not in old.ratios, r)):
            o, n = old.ratios.get(ratio), new.ratios.get(ratio)
            if not o or not n:
                rows.append([name, tier, ratio, f"{statistics.median(o):.2f}" if o else "", spread(o or []),
                             f"{statistics.median(n):.2f}" if n else "", spread(n or []), "",
                             f"only {'old' if o else 'new'} prints it"])
                continue
            om, nm = statistics.median(o), statistics.median(n)
            change = nm / om if om else float("inf")
            verdict = "PASS" if change >= BOUND else "FAIL"
            ok &= verdict == "PASS"
            if change > 2 - BOUND:
                verdict += " (gain > 10%)"
            rows.append([name, tier, ratio, f"{om:.2f}", spread(o), f"{nm:.2f}", spread(n),
                         f"{change:.2f}", verdict])
    from benchmarks.common import table

    print(table(["benchmark", "tier", "ratio", "old median", "old spread", "new median", "new spread",
                 "new/old", f"verdict (FAIL below {BOUND:.2f})"], rows, "<<<>>>>><"))
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NAMES)}")
    parser.add_argument("--old", type=Path, required=True, help="the old checkout (with its .venv)")
    parser.add_argument("--new", type=Path, required=True, help="the new checkout (with its .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", choices=("both", "embedded", "real"), default="both")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (see SIZES)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    parser.add_argument("--bench-from", choices=("own", "old", "new"), default="own",
                        help="whose benchmark scripts measure both revisions (default: each its own)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    bench = {"own": None, "old": args.old.resolve(), "new": args.new.resolve()}[args.bench_from]
    trees = (Tree("old", args.old.resolve(), bench), Tree("new", args.new.resolve(), bench))
    for tree in trees:
        if not os.access(tree.python, os.X_OK):
            parser.error(f"--{tree.label} {tree.path}: no {tree.python}; run make install-test there")
    tier_names = ["embedded", "real"] if args.tier == "both" else [args.tier]
    logs = Path(tempfile.mkdtemp(prefix="proc-bench-compare-"))
    print(f"old {trees[0].path}, new {trees[1].path}; {args.rounds} round(s); benchmark scripts: "
          f"{'each its own' if bench is None else bench}; logs in {logs}", flush=True)
    names, missing = [], []
    for name in args.names or NAMES:
        lacking = [t.label for t in trees if not t.has(name)]
        (missing if lacking else names).append((name, lacking))
    tiers_of = {name: [t for t in tier_names if t == "embedded" or name not in EMBEDDED_ONLY] for name, _ in names}
    results = {(name, tier): {"old": Result(), "new": Result()} for name, _ in names for tier in tiers_of[name]}
    started = time.perf_counter()
    with redis_server() as broker:
        for r in range(args.rounds):
            for i, (name, _) in enumerate(names):
                for tier in tiers_of[name]:
                    order = trees if (r + i) % 2 == 0 else trees[::-1]
                    for tree in order:
                        log = logs / f"{name}-{tier}-{tree.label}-{r + 1}.log"
                        ratios, error = run_one(tree, name, tier, args, broker, log)
                        res = results[(name, tier)][tree.label]
                        for key, value in ratios.items():
                            res.ratios.setdefault(key, []).append(value)
                        if error:
                            print(f"  {tree.label} {name} {tier}: {error}", flush=True)
                            res.errors.append(f"round {r + 1}: {error}")
    print(f"\n{args.rounds} round(s) interleaved, {time.perf_counter() - started:.0f} s; "
          f"sizes: {'--quick' if args.quick else 'full'} (benchmarks.compare.SIZES); logs in {logs}")
    ok = report(results)
    for name, lacking in missing:
        print(f"{name}: benchmarks/bench_{name}.py only in the {'old' if lacking == ['new'] else 'new'} tree"
              if len(lacking) == 1 else f"{name}: in neither tree")
        ok = False if len(lacking) == 2 else ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
