"""The datafix files: sequences, discovery, ordering, checksums and the template for new ones.

A datafix is one file ``<directory>/<id>_<slug>.py`` with a docstring header and
module-level ``revision`` (the id, digits), ``description``, ``selector`` (the documents
it migrates), ``invalid`` (the documents it reports and leaves alone), and
``upgrade(ctx)`` / ``downgrade(ctx)``.

Each directory is one *sequence* with a name: proc's own ``migrations/versions`` is
``proc``; any other directory names its sequence in a file ``sequence.txt`` (one line,
e.g. ``myapp``), as Alembic's ``version_locations`` each carry a branch label. The
directories come from ``--versions`` / ``PROC_DATAFIX_VERSIONS`` (``:``-separated);
proc's own is always first, the others follow in the order given. Within a sequence,
files are ordered by id; every file the ledger does not record as applied runs,
whatever its id (no high-water mark).

A datafix's *label* is what commands take as ``VERSION`` and what the ledger and the
backups key it by: the bare id for proc's own (``0001``, as ledgers always were) and
``sequence:id`` for the others (``myapp:0001``), so ids never collide across sequences.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import os
import re
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

from .errors import ScriptError

#: The datafix files shipped with proc: the ``proc`` sequence.
VERSIONS_DIR = Path(__file__).parent / "versions"
PROC = "proc"
#: The file naming a directory's sequence (every directory but proc's own has one).
MARKER = "sequence.txt"
ENV = "PROC_DATAFIX_VERSIONS"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
TEMPLATE = Path(__file__).parent / "script.py.tmpl"
_FILE = re.compile(r"^(\d+)_([a-z0-9_]+)\.py$")
_REQUIRED = ("revision", "description", "selector", "invalid", "upgrade", "downgrade")


@dataclass(frozen=True)
class Script:
    """One datafix file, loaded."""

    revision: str
    path: Path
    module: ModuleType
    checksum: str
    sequence: str = PROC
    #: Place in the run order of every configured sequence (proc's first).
    position: int = 0

    @property
    def label(self) -> str:
        """``0001`` for proc's own sequence, ``myapp:0001`` for another one."""
        return self.revision if self.sequence == PROC else f"{self.sequence}:{self.revision}"

    @property
    def description(self) -> str:
        return self.module.description

    @property
    def selector(self) -> dict:
        """The documents this datafix migrates (still in the old shape)."""
        return self.module.selector

    @property
    def invalid(self) -> dict:
        """The documents this datafix cannot migrate: reported, never written."""
        return self.module.invalid

    @property
    def order(self) -> int:
        """The id as a number (ordering within the sequence)."""
        return int(self.revision)

    def __str__(self) -> str:
        return f"{self.label} {self.description}"


@dataclass(frozen=True)
class Sequence:
    """One directory of datafix files and the name it gives them."""

    name: str
    directory: Path
    scripts: tuple


def checksum(path: Path) -> str:
    """sha256 of the file with line endings and trailing whitespace normalised."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line.rstrip() for line in lines).strip() + "\n"
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: Path, revision: str) -> ModuleType:
    """Import one datafix file. Anything it raises at import, ``BaseException`` included (a
    ``sys.exit(0)``, a ``KeyboardInterrupt``), is a ``ScriptError`` naming the file, the
    exception and the file's line: a file that cannot be loaded is never taken as loaded."""
    name = f"migrations._datafix_{revision}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: B036 - SystemExit and KeyboardInterrupt are load errors too
        raise ScriptError(f"datafix {path} cannot be loaded: {_describe(exc, path)}; fix or remove "
                          "the file (every datafix command and the startup guard load it)") from None
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ScriptError(f"datafix {path} lacks {', '.join(missing)}; see {TEMPLATE.name}")
    if str(module.revision) != revision:
        raise ScriptError(f"datafix {path} says revision = {module.revision!r}, but its file "
                          f"name says {revision!r}")
    return module


def _describe(exc: BaseException, path: Path) -> str:
    """``SystemExit(0) at line 7``: the exception, and the file's last line it passed through."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SystemExit):
        text = f"SystemExit({exc.code!r}): the file exits when imported"
    where = path.resolve()
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if Path(frame.filename).resolve() == where]
    if isinstance(exc, SyntaxError) and exc.lineno and not lines:
        lines = [exc.lineno]
    return f"{text} at line {lines[-1]}" if lines else text


_cache: dict[tuple[Path, str], Script] = {}


def directories(versions=None) -> list[Path]:
    """proc's own directory, then every directory of ``versions`` (``:``-separated string,
    a path, or a list of them; default ``$PROC_DATAFIX_VERSIONS``), in order, once each."""
    if versions is None:
        versions = os.environ.get(ENV) or ""
    items = [versions] if isinstance(versions, (str, Path)) else list(versions)
    found = [VERSIONS_DIR]
    for item in items:
        for part in str(item).split(":"):
            if not part.strip():
                continue
            path = Path(part.strip()).expanduser()
            if not path.is_dir():
                raise ScriptError(f"datafix directory {part} (--versions / {ENV}) does not exist: "
                                  "create it or remove it from the list")
            if all(path.resolve() != known.resolve() for known in found):
                found.append(path)
    return found


def sequence_name(directory: Path) -> str:
    """``proc`` for proc's own directory, else the name in the directory's ``sequence.txt``."""
    if directory.resolve() == VERSIONS_DIR.resolve():
        return PROC
    marker = directory / MARKER
    if not marker.is_file():
        raise ScriptError(f"datafix directory {directory} does not name its sequence: write its name "
                          f"(e.g. myapp) into {marker}")
    name = marker.read_text(encoding="utf-8").strip()
    if not _NAME.match(name):
        raise ScriptError(f"{marker} names the sequence {name!r}: use lower-case letters, digits, "
                          "'-' or '_', starting with a letter (at most 40)")
    return name


def _scan(directory: Path, name: str) -> list[Script]:
    found: dict[int, Script] = {}
    for path in sorted(directory.glob("*.py")):
        match = _FILE.match(path.name)
        if not match or not path.is_file():
            continue
        revision, digest = match.group(1), checksum(path)
        script = _cache.get((path, digest))
        if script is None:
            script = _cache[(path, digest)] = Script(revision, path, _load(path, revision), digest)
        if script.order in found:
            raise ScriptError(f"two datafixes of sequence {name!r} have id {revision}: "
                              f"{found[script.order].path} and {path}; renumber one "
                              "(`procctl datafix new` picks the next id)")
        found[script.order] = dataclasses.replace(script, sequence=name)
    return [found[order] for order in sorted(found)]


def sequences(versions=None) -> list[Sequence]:
    """Every configured sequence, proc's first; two directories may not share a name."""
    result: list[Sequence] = []
    for directory in directories(versions):
        name = sequence_name(directory)
        for other in result:
            if other.name == name:
                raise ScriptError(f"datafix directories {other.directory} and {directory} both name "
                                  f"their sequence {name!r}: give one another name in its {MARKER}")
        result.append(Sequence(name, directory, tuple(_scan(directory, name))))
    return result


def discover(versions=None) -> list[Script]:
    """Every datafix of every configured sequence, in run order: proc's sequence first, then
    the others in the order given, each in id order."""
    scripts = [s for seq in sequences(versions) for s in seq.scripts]
    return [dataclasses.replace(s, position=i) for i, s in enumerate(scripts)]


def known(scripts: list[Script]) -> str:
    return ", ".join(s.label for s in scripts) or "none"


def find(scripts: list[Script], version: str) -> Script:
    """The datafix a ``VERSION`` names: ``0001`` (proc's sequence) or ``myapp:0001``."""
    text = str(version).strip()
    name, _, revision = text.rpartition(":")
    name = name or PROC
    names = list(dict.fromkeys([PROC, *(s.sequence for s in scripts)]))
    if name not in names:
        raise ScriptError(f"no datafix sequence is named {name!r} (in {text!r}); known sequences: "
                          f"{', '.join(names)}")
    if not revision.isdigit():
        raise ScriptError(f"{text!r} is not a datafix version: give an id (0001) or sequence:id "
                          f"(myapp:0001); known: {known(scripts)}")
    for s in scripts:
        if s.sequence == name and s.order == int(revision):
            return s
    raise ScriptError(f"no datafix {text!r}; known: {known(scripts)}")


def resolve(scripts: list[Script], revision: str | None) -> int | None:
    """The run-order position ``--to`` names (``base`` or ``0``: before the first datafix)."""
    if revision is None:
        return None
    if revision in ("base", "0") or revision.strip("0") == "":
        return -1
    return find(scripts, revision).position


#: The longest datafix name ``new`` accepts (it is the description and the docstring's title).
MAX_NAME = 200
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def check_name(name: str) -> str:
    """``name`` if it can be a datafix's description: one line of printable characters
    (no newline, tab or other control character), at most ``MAX_NAME``, with a letter or
    digit for the file name. Quotes, backslashes and any other printable text are fine: the
    file holds the name as a Python literal."""
    if not isinstance(name, str) or not name.strip():
        raise ScriptError("the datafix name is empty: give a short description, e.g. "
                          "`procctl datafix new \"fill parent key\"`")
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        raise ScriptError(f"datafix name {name!r} contains the character {bad!r}: give one line of "
                          "printable text (no newline, tab or other control character)")
    if len(name) > MAX_NAME:
        raise ScriptError(f"datafix name is {len(name)} characters long: give at most {MAX_NAME} "
                          "(say the rest in the file's docstring)")
    slug(name)
    return name


def slug(name: str) -> str:
    """The file name part of ``name``: lower-case ASCII letters and digits joined by ``_``
    (at most 60), so no separator, dot or other character reaches the path."""
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not text:
        raise ScriptError(f"datafix name {name!r} has no ASCII letters or digits for the file name: "
                          "add some (e.g. `backfill owner`)")
    return text[:60].rstrip("_")


def _docstring_text(value: str) -> str:
    """``value`` escaped for the inside of a ``\"\"\"...\"\"\"`` string: it reads back as ``value``."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render(name: str, revision: str, when: str) -> str:
    """The template filled in, in one pass: ``description`` and ``revision`` as ``repr()``
    literals, the docstring's title escaped; the result is compiled, and its ``revision``
    and ``description`` read back exactly (``ast.literal_eval``), or ``ScriptError``."""
    values = {"revision": repr(revision), "description": repr(name), "title": _docstring_text(name),
              "date": when}
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))
    try:
        tree = ast.parse(text, filename=TEMPLATE.name)
        compile(tree, TEMPLATE.name, "exec")
    except SyntaxError as exc:
        raise ScriptError(f"datafix name {name!r} does not give a valid file ({exc.msg}): "
                          "choose another name") from None
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("revision", "description")}
    if assigned != {"revision": revision, "description": name} or ast.get_docstring(tree, clean=False) \
            .splitlines()[0] != name:
        raise ScriptError(f"datafix name {name!r} does not read back from the generated file: "
                          "choose another name")
    return text


def create(name: str, versions=None, *, sequence: str = PROC, now: datetime | None = None) -> Path:
    """Write the next datafix file of ``sequence`` from the template and return its path.

    The name is checked (``check_name``) and becomes ``description`` exactly, as a Python
    literal; the file is compiled before it is written, never over an existing file, and
    always inside the sequence's directory. Nothing of the name is ever run.
    """
    name = check_name(name)
    title = slug(name)
    found = {seq.name: seq for seq in sequences(versions)}
    if sequence not in found:
        raise ScriptError(f"no datafix sequence is named {sequence!r}; known sequences: "
                          f"{', '.join(found)} (add a directory with --versions / {ENV})")
    seq = found[sequence]
    revision = f"{(seq.scripts[-1].order if seq.scripts else 0) + 1:04d}"
    path = seq.directory / f"{revision}_{title}.py"
    if path.resolve().parent != seq.directory.resolve():
        raise ScriptError(f"datafix name {name!r} gives the path {path}, outside {seq.directory}")
    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = render(name, revision, when)
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise ScriptError(f"{path} already exists: remove it or choose another name") from None
    except OSError as exc:
        raise ScriptError(f"cannot write {path}: {exc.strerror or exc}; remove what is there or "
                          "choose another name") from None
    return path
