"""The import graph of ``proc/`` and the modules two paths enter, read from the source alone.

    python -m benchmarks.import_graph            # the figures, as text
    python -m benchmarks.import_graph --json     # the same, as one JSON object
    python -m benchmarks.import_graph --root DIR # another checkout (either layout)

Nothing of proc is imported or run: every figure comes from ``ast`` over the ``.py`` files
under ``proc/``, so the script measures a tree of either layout, including one checked out
from before a move.

How it measures:

- **modules**: the ``.py`` files under ``proc/`` (a package's ``__init__.py`` is one module);
  "core" leaves out the two applications inside it, ``proc/cli/`` and ``proc/demo/``.
- **imports**: distinct pairs (A, B) of proc modules where A imports B, at module level or
  inside a function. ``from . import x`` counts an import of the module ``x`` when ``x`` is a
  module, else of the package that defines the name.
- **depth**: the number of modules on the longest chain of imports (a module that imports no
  other proc module has depth 1). Circles are listed instead when there are any.
- **rooms**: the same graph with each subpackage of ``proc/`` (``proc/run/``, ``proc/cli/``...)
  counted as one node, as issue 21 counts "43 modules stacked 14 deep, 187 imports": rooms,
  imports between rooms, and the depth in rooms.
- **a path's modules entered**: a static call walk from given entry functions. From each
  function it follows every proc function it names (called, or handed on as a value, as a
  callback is), resolved through the module's imports: ``machine.transition``, a name taken
  with ``from .machine import transition``, a class's ``__init__`` through its name,
  ``self.m`` within the class, and a call ``x.m(...)`` where ``m`` is a method only one
  proc class defines. It reports the modules the reachable functions live in. It is an upper bound of
  what one run enters (every branch is taken) and, being the same rule on both layouts, a fair
  comparison of a before and an after. Functions nested in a function belong to it.

The two paths are issue 21's: a caller's process to SUCCESS (the caller's ``__call__`` and the
worker's ``tasks.run``), and an operator's bulk retry (``bulk.run``, which also plans,
refuses and records). Each entry is given as MODULE:QUALNAME; several spellings are tried so
that both layouts answer.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "proc"
APPLICATIONS = ("proc.cli", "proc.demo")

#: name -> the entry functions of the path, each a list of spellings (old layout, new layout).
PATHS = {
    "caller to SUCCESS": [
        ["proc.process:BoundProcess.__call__"],
        ["proc.tasks:run"],
    ],
    "bulk retry": [
        ["proc.bulk:run", "proc.ops.bulk:run"],
    ],
}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    #: local name -> module name (``from . import machine``, ``import proc.store.db as db``)
    module_aliases: dict = field(default_factory=dict)
    #: local name -> (module name, name) (``from .machine import transition``)
    name_imports: dict = field(default_factory=dict)
    #: qualname -> function node; classes map to None
    functions: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)


def read_modules(root: Path) -> dict[str, Module]:
    """Every module under ROOT/proc, by dotted name, parsed."""
    modules = {}
    base = root / PACKAGE
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)), is_package)
    return modules


def _absolute(module: Module, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    package = package[: len(package) - (level - 1)]
    return ".".join(package + ([target] if target else []))


def imports_of(module: Module, modules: dict[str, Module]) -> set[str]:
    """The proc modules MODULE imports, anywhere in it; fills its alias tables on the way."""
    found = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
                    if alias.asname:
                        module.module_aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module)
            for alias in node.names:
                local = alias.asname or alias.name
                candidate = f"{base}.{alias.name}" if base else alias.name
                if candidate in modules:
                    found.add(candidate)
                    module.module_aliases[local] = candidate
                elif base in modules:
                    found.add(base)
                    module.name_imports[local] = (base, alias.name)
    found.discard(module.name)
    return found


def graph(root: Path) -> tuple[dict[str, Module], dict[str, set[str]]]:
    modules = read_modules(root)
    return modules, {name: imports_of(module, modules) for name, module in modules.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def depth(edges: dict[str, set[str]]) -> tuple[int, list[str]]:
    """The longest chain of imports (modules on it) and one such chain; the graph has no circle."""
    best: dict[str, list[str]] = {}

    def chain(node):
        if node not in best:
            longest = max((chain(child) for child in sorted(edges.get(node, ()))), key=len, default=[])
            best[node] = [node] + longest
        return best[node]

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    longest = max((chain(node) for node in sorted(edges)), key=len, default=[])
    return len(longest), longest


def _index_definitions(modules: dict[str, Module]) -> dict[str, list[tuple[str, str]]]:
    """Fill each module's functions and classes; method name -> [(module, qualname)]."""
    methods: dict[str, list[tuple[str, str]]] = {}
    for module in modules.values():
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                module.classes[node.name] = node
                module.functions[node.name] = node
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        qualname = f"{node.name}.{item.name}"
                        module.functions[qualname] = item
                        methods.setdefault(item.name, []).append((module.name, qualname))
    return methods


def _resolve_in(modules, module_name: str, name: str):
    """NAME as module MODULE_NAME defines or re-exports it, as (module, qualname), or None."""
    seen = set()
    while module_name in modules and (module_name, name) not in seen:
        seen.add((module_name, name))
        module = modules[module_name]
        if name in module.functions:
            return module_name, name
        if name in module.name_imports:
            module_name, name = module.name_imports[name]
            continue
        return None
    return None


def _references(modules, methods, module: Module, qualname: str, node) -> set[tuple[str, str]]:
    """The proc functions (module, qualname) that the body of NODE names."""
    found = set()
    owner = qualname.split(".")[0] if "." in qualname else None
    called = {id(sub.func) for sub in ast.walk(node) if isinstance(sub, ast.Call)}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            hit = _resolve_in(modules, module.name, sub.id) if sub.id != qualname else None
            if hit:
                found.add(hit)
        elif isinstance(sub, ast.Attribute):
            value = sub.value
            if isinstance(value, ast.Name):
                if value.id in module.module_aliases:
                    hit = _resolve_in(modules, module.module_aliases[value.id], sub.attr)
                    if hit:
                        found.add(hit)
                    continue
                if value.id in ("self", "cls") and owner:
                    hit = _resolve_in(modules, module.name, f"{owner}.{sub.attr}")
                    if hit:
                        found.add(hit)
                        continue
                target = _resolve_in(modules, module.name, value.id)
                if target and target[1] in modules[target[0]].classes:
                    hit = _resolve_in(modules, target[0], f"{target[1]}.{sub.attr}")
                    if hit:
                        found.add(hit)
                        continue
            elif isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
                alias = module.module_aliases.get(value.value.id)
                if alias:
                    hit = _resolve_in(modules, alias, f"{value.attr}.{sub.attr}")
                    if hit:
                        found.add(hit)
                        continue
            owners = methods.get(sub.attr, [])
            if len(owners) == 1 and id(sub) in called:
                found.add(owners[0])
    classes = {hit for hit in found if hit[1] in modules[hit[0]].classes}
    for module_name, class_name in classes:
        init = _resolve_in(modules, module_name, f"{class_name}.__init__")
        post = _resolve_in(modules, module_name, f"{class_name}.__post_init__")
        found.update(hit for hit in (init, post) if hit)
    return found


def walk(modules: dict[str, Module], methods, entries: list[tuple[str, str]]) -> tuple[list[str], int]:
    """The modules the functions reachable from ENTRIES live in, and how many functions."""
    seen, todo = set(), list(entries)
    while todo:
        module_name, qualname = todo.pop()
        if (module_name, qualname) in seen:
            continue
        seen.add((module_name, qualname))
        module = modules[module_name]
        node = module.functions[qualname]
        if isinstance(node, ast.ClassDef):
            continue
        todo.extend(_references(modules, methods, module, qualname, node) - seen)
    return sorted({module for module, _ in seen}), len(seen)


def _entry(modules, spellings: list[str]) -> tuple[str, str]:
    for spelling in spellings:
        module_name, qualname = spelling.split(":")
        if module_name in modules and qualname in modules[module_name].functions:
            return module_name, qualname
    raise SystemExit(f"none of {spellings} is a function of this tree: name the entry that it has")


def rooms(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """EDGES with each subpackage of proc/ as one node (``proc.run.dispatch`` -> ``proc.run``)."""
    def room(name):
        parts = name.split(".")
        return ".".join(parts[:2])

    out: dict[str, set[str]] = {}
    for name, targets in edges.items():
        out.setdefault(room(name), set()).update(room(t) for t in targets)
    for name, targets in out.items():
        targets.discard(name)
    return out


def measure(root: Path) -> dict:
    modules, edges = graph(root)
    core = {name: {to for to in targets if not to.startswith(APPLICATIONS)}
            for name, targets in edges.items() if not name.startswith(APPLICATIONS)}
    found = circles(edges)
    result = {
        "root": str(root),
        "modules": len(modules),
        "core modules": len(core),
        "imports": sum(len(targets) for targets in edges.values()),
        "core imports": sum(len(targets) for targets in core.values()),
        "circles": found,
    }
    if not found:
        result["depth"], result["longest chain"] = depth(edges)
    by_room = rooms(edges)
    result["rooms"] = {"rooms": len(by_room), "imports": sum(len(t) for t in by_room.values()),
                       "circles": circles(by_room)}
    if not result["rooms"]["circles"]:
        result["rooms"]["depth"], result["rooms"]["longest chain"] = depth(by_room)
    methods = _index_definitions(modules)
    paths = {}
    for name, entries in PATHS.items():
        entered, functions = walk(modules, methods, [_entry(modules, spellings) for spellings in entries])
        entered_rooms = sorted({".".join(m.split(".")[:2]) for m in entered})
        paths[name] = {"modules entered": len(entered), "rooms entered": len(entered_rooms),
                       "functions": functions, "modules": entered}
    result["paths"] = paths
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_graph", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose proc/ to measure (default: this one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not (args.root / PACKAGE / "__init__.py").is_file():
        parser.error(f"{args.root} has no {PACKAGE}/__init__.py: give --root the checkout's top folder")
    result = measure(args.root)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"proc/ at {result['root']}")
    print(f"  modules  {result['modules']} ({result['core modules']} in the core, without cli/ and demo/)")
    print(f"  imports  {result['imports']} between modules ({result['core imports']} within the core)")
    if result["circles"]:
        for circle in result["circles"]:
            print("  CIRCLE   " + " -> ".join(circle))
    else:
        print(f"  depth    {result['depth']} modules: " + " -> ".join(result["longest chain"]))
    r = result["rooms"]
    print(f"  rooms    {r['rooms']} (a subpackage as one), {r['imports']} imports between them, "
          + (f"depth {r['depth']}: " + " -> ".join(r["longest chain"]) if not r["circles"] else
             "CIRCLES " + "; ".join(" -> ".join(c) for c in r["circles"])))
    for name, path in result["paths"].items():
        print(f"  {name}: {path['modules entered']} modules entered ({path['rooms entered']} rooms, "
              f"{path['functions']} functions)")
        print("    " + ", ".join(path["modules"]))


if __name__ == "__main__":
    main()
