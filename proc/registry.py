"""Which Proc subclasses and process kinds exist in this application.

A kind is a Proc subclass (named by its collection) plus a process method:
``"upload.process_upload"``. ``PROC_MODELS`` names the modules that define the
application's subclasses; ``load_models()`` imports them (the CLI, API and workers call it).

The registry fills itself: ``proc.document`` registers the ``Proc`` base class when it is
defined, and a process method is anything ``@process`` marked (``is_process_method``), so
this module imports neither of them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property

from . import config
from .exceptions import ConfigurationError, UnknownKind
from .config import DEFAULTS, KindSettings


@dataclass(frozen=True)
class Kind:
    cls: type
    method: str

    @property
    def collection(self) -> str:
        return self.cls._get_collection_name()

    @property
    def name(self) -> str:
        return f"{self.collection}.{self.method}"

    @property
    def process(self):
        return getattr(self.cls, self.method)

    @cached_property
    def settings(self) -> KindSettings:
        merged = DEFAULTS.merged(self.process.options, f"@process on {self.name}")
        overrides = config.get().kind_settings.get(self.name)
        if overrides:
            merged = merged.merged(overrides, f"PROC_KIND_SETTINGS[{self.name!r}]")
        return merged

    def __str__(self) -> str:
        return self.name


_loaded: set[str] = set()


def load_models(modules=None) -> list[type]:
    """Import the modules that define Proc subclasses (default: ``PROC_MODELS``)."""
    for name in modules or config.get().models:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"PROC_MODELS names {name!r}, which cannot be imported ({exc}); "
                "set PROC_MODELS to importable module names, comma-separated") from exc
        _loaded.add(name)
    return proc_classes()


_bases: list[type] = []


def register_base(cls: type) -> type:
    """Register the base class whose concrete subclasses are the Proc kinds (``Proc``)."""
    if cls not in _bases:
        _bases.append(cls)
    return cls


def is_process_method(value) -> bool:
    return getattr(type(value), "is_process_method", False) is True


def proc_classes() -> list[type]:
    """Every concrete Proc subclass imported so far."""
    found, stack = [], [sub for base in _bases for sub in base.__subclasses__()]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not cls._meta.get("abstract"):
            found.append(cls)
    return sorted(found, key=lambda c: c._get_collection_name())


_by_collection: dict[str, type] = {}


def class_for(collection: str) -> type:
    """The Proc subclass stored in ``collection``."""
    cls = _by_collection.get(collection)
    if cls is not None:
        return cls
    for attempt in range(2):
        if attempt:
            load_models()
        for cls in proc_classes():
            _by_collection[cls._get_collection_name()] = cls
        if collection in _by_collection:
            return _by_collection[collection]
    known = ", ".join(c._get_collection_name() for c in proc_classes()) or "none"
    raise UnknownKind(f"no Proc subclass uses collection {collection!r} (known: {known}); "
                      "is its module listed in PROC_MODELS?")


_kinds: dict[str, Kind] = {}


def kinds() -> list[Kind]:
    """Every process kind of the imported Proc subclasses."""
    result = []
    for cls in proc_classes():
        for attr in dir(cls):
            if is_process_method(getattr(cls, attr, None)):
                result.append(kind(cls, attr))
    return result


def kind(cls: type, method: str) -> Kind:
    key = f"{cls._get_collection_name()}.{method}"
    found = _kinds.get(key)
    if found is None or found.cls is not cls:
        found = _kinds[key] = Kind(cls, method)
    return found


def kind_named(name: str) -> Kind:
    """The kind called ``"collection.method"``."""
    collection, _, method = name.partition(".")
    cls = class_for(collection)
    if not is_process_method(getattr(cls, method, None)):
        raise UnknownKind(f"{cls.__name__} has no process method {method!r}")
    return kind(cls, method)


def kind_of(cls: type, raw: dict | None) -> Kind | None:
    """The kind of the current (or last) process of the raw document ``raw`` of ``cls``:
    None when it names no process method of ``cls`` (never called, or the method is gone)."""
    method = (raw or {}).get("current_process")
    return (kind(cls, method) if isinstance(method, str) and method
            and is_process_method(getattr(cls, method, None)) else None)


def forget_settings() -> None:
    """Drop cached per-kind settings (after ``config.configure(kind_settings=...)``)."""
    _kinds.clear()
