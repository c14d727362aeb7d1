"""The layers of docs/architecture.md, checked on the code: no import runs back up a layer, no
circle, and the core imports none of the applications.

The import graph is read from the source (``benchmarks.import_graph``: every import, at module
level or inside a function). A module may import modules of its own layer or of a layer below;
each module of ``proc/`` belongs to exactly one layer, so a new module has to be placed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks.import_graph import circles, graph

ROOT = Path(__file__).resolve().parent.parent

#: Bottom up: (layer, the modules and packages in it). The root's facts at the bottom, the
#: public face above the layers, the applications inside proc/ on top.
LAYERS = (
    ("facts", ("proc.exceptions", "proc.names", "proc.redact", "proc.status", "proc.timeutil", "proc.config")),
    ("store", ("proc.store",)),
    ("registry", ("proc.registry",)),
    ("machine", ("proc.machine",)),
    ("run", ("proc.run",)),
    ("monitor", ("proc.monitor",)),
    ("ops", ("proc.ops",)),
    ("face", ("proc", "proc.document", "proc.process", "proc.tasks", "proc.startup")),
    ("applications", ("proc.cli", "proc.demo", "proc.__main__")),
)
APPLICATIONS_OUTSIDE = ("api", "migrations", "celery_app")


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of MODULE's layer: the layer naming it, or the package holding it (``proc``
    itself names only its ``__init__``)."""
    best, found = -1, None
    for index, (_, members) in enumerate(layers):
        for member in members:
            inside = module.startswith(member + ".") and member != "proc"
            if (module == member or inside) and len(member) > best:
                best, found = len(member), index
    return found


def violations(edges: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import that runs back up a layer, every module in no layer, every circle."""
    found = []
    for module in sorted(edges):
        here = layer_of(module, layers)
        if here is None:
            found.append(f"{module} is in no layer: place it in LAYERS (tests/test_layers.py) "
                         f"and in docs/architecture.md")
            continue
        for target in sorted(edges[module]):
            there = layer_of(target, layers)
            if there is not None and there > here:
                found.append(f"{module} ({layers[here][0]}) imports {target} ({layers[there][0]}): "
                             f"an import back up a layer")
    found.extend("circle: " + " -> ".join(circle) for circle in circles(edges))
    return found


def test_no_import_runs_back_up_a_layer_and_none_closes_a_circle():
    _, edges = graph(ROOT)
    assert violations(edges) == []


def test_the_core_imports_no_application():
    modules, _ = graph(ROOT)
    core = [m for m in modules.values() if layer_of(m.name) != len(LAYERS) - 1]
    found = []
    for module in core:
        for node in ast.walk(module.tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{module.name} imports {n}" for n in names if n.split(".")[0] in APPLICATIONS_OUTSIDE]
    assert len(core) > 30 and found == []


@pytest.mark.parametrize("edges, expected", [
    ({"proc.store.db": {"proc.run.dispatch"}, "proc.run.dispatch": set()},
     ["proc.store.db (store) imports proc.run.dispatch (run): an import back up a layer"]),
    ({"proc.machine": {"proc.monitor.stuck"}, "proc.monitor.stuck": set()},
     ["proc.machine (machine) imports proc.monitor.stuck (monitor): an import back up a layer"]),
    ({"proc.run.dispatch": {"proc.run.messaging"}, "proc.run.messaging": {"proc.run.dispatch"}},
     ["circle: proc.run.dispatch -> proc.run.messaging"]),
    ({"proc.newcomer": {"proc.status"}, "proc.status": set()},
     ["proc.newcomer is in no layer: place it in LAYERS (tests/test_layers.py) and in docs/architecture.md"]),
    ({"proc.ops.bulk": {"proc.run.dispatch", "proc.ops.filters"}, "proc.ops.filters": {"proc.registry"},
      "proc.run.dispatch": {"proc.machine"}, "proc.machine": set(), "proc.registry": set()}, []),
])
def test_the_check_finds_an_import_back_up_a_circle_and_an_unplaced_module(edges, expected):
    assert violations(edges) == expected


def test_a_function_level_import_counts(tmp_path):
    package = tmp_path / "proc"
    (package / "store").mkdir(parents=True)
    (package / "run").mkdir()
    for path in ("__init__.py", "store/__init__.py", "run/__init__.py", "run/dispatch.py"):
        (package / path).write_text("")
    (package / "store" / "db.py").write_text("def connect():\n    from ..run import dispatch\n")
    _, edges = graph(tmp_path)
    assert violations(edges) == ["proc.store.db (store) imports proc.run.dispatch (run): an import back up a layer"]


def test_the_import_graph_figures_come_from_python_m_benchmarks_import_graph():
    """The command docs/architecture.md gives for the figures, as its own process."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "benchmarks.import_graph", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    modules, edges = graph(ROOT)
    assert figures["modules"] == len(modules) and figures["imports"] == sum(map(len, edges.values()))
    assert figures["circles"] == [] and figures["depth"] == len(figures["longest chain"]) > 1
    for path in ("caller to SUCCESS", "bulk retry"):
        entered = figures["paths"][path]["modules"]
        assert "proc.machine" in entered and figures["paths"][path]["modules entered"] == len(entered)
    assert "proc.ops.bulk" in figures["paths"]["bulk retry"]["modules"]
    assert "proc.run.execution" in figures["paths"]["caller to SUCCESS"]["modules"]
    wrong = subprocess.run([sys.executable, "-m", "benchmarks.import_graph", "--root", str(ROOT / "docs")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "has no proc/__init__.py: give --root the checkout's top folder" in wrong.stderr
