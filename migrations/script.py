"""The datafix files: discovery, ordering, checksums and the template for new ones.

A datafix is one file ``versions/<id>_<slug>.py`` with a docstring header and
module-level ``revision`` (the id, digits), ``description``, ``selector`` (the documents
it migrates), ``invalid`` (the documents it reports and leaves alone), and
``upgrade(ctx)`` / ``downgrade(ctx)``. Files are ordered by id; every file the ledger
does not record as applied runs, whatever its id (no high-water mark).
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

from .errors import ScriptError

#: The datafix files shipped with the application.
VERSIONS_DIR = Path(__file__).parent / "versions"
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
        return int(self.revision)

    def __str__(self) -> str:
        return f"{self.revision} {self.description}"


def checksum(path: Path) -> str:
    """sha256 of the file with line endings and trailing whitespace normalised."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line.rstrip() for line in lines).strip() + "\n"
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: Path, revision: str) -> ModuleType:
    name = f"migrations._datafix_{revision}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScriptError(f"datafix {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ScriptError(f"datafix {path} lacks {', '.join(missing)}; see {TEMPLATE.name}")
    if str(module.revision) != revision:
        raise ScriptError(f"datafix {path} says revision = {module.revision!r}, but its file "
                          f"name says {revision!r}")
    return module


_cache: dict[tuple[Path, str], Script] = {}


def discover(directory: Path | str | None = None) -> list[Script]:
    """Every datafix in ``directory`` (default: the shipped ones), in id order."""
    directory = Path(directory or VERSIONS_DIR)
    if not directory.is_dir():
        raise ScriptError(f"datafix directory {directory} does not exist")
    found: dict[int, Script] = {}
    for path in sorted(directory.glob("*.py")):
        match = _FILE.match(path.name)
        if not match:
            continue
        revision, digest = match.group(1), checksum(path)
        script = _cache.get((path, digest))
        if script is None:
            script = _cache[(path, digest)] = Script(revision, path, _load(path, revision), digest)
        if script.order in found:
            raise ScriptError(f"two datafixes have id {revision}: {found[script.order].path.name} "
                              f"and {path.name}; renumber one (`procctl datafix new` picks the next id)")
        found[script.order] = script
    return [found[order] for order in sorted(found)]


def resolve(scripts: list[Script], revision: str | None) -> int | None:
    """The numeric id ``--to`` names (``0`` or ``base`` means before the first datafix)."""
    if revision is None:
        return None
    if revision in ("base", "0") or revision.strip("0") == "":
        return 0
    if not revision.isdigit():
        raise ScriptError(f"--to {revision!r} is not a datafix id (digits, or 'base')")
    if int(revision) not in {s.order for s in scripts}:
        known = ", ".join(s.revision for s in scripts) or "none"
        raise ScriptError(f"no datafix has id {revision} (known: {known})")
    return int(revision)


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not text:
        raise ScriptError(f"datafix name {name!r} has no letters or digits")
    return text[:60]


def create(name: str, directory: Path | str | None = None, *, now: datetime | None = None) -> Path:
    """Write the next datafix file from the template and return its path."""
    directory = Path(directory or VERSIONS_DIR)
    scripts = discover(directory)
    revision = f"{(scripts[-1].order if scripts else 0) + 1:04d}"
    path = directory / f"{revision}_{slug(name)}.py"
    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in (("revision", revision), ("description", name.strip()), ("date", when)):
        text = text.replace("${" + key + "}", value)
    path.write_text(text, encoding="utf-8")
    return path
