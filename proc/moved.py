"""Names that moved in a release stay importable from their old module for one release.

    __getattr__ = moved.names(__name__, {"schedule": ("messaging", "schedule_check")})

A module-level ``__getattr__`` (PEP 562) that finds the name in its new module and warns
with a ``DeprecationWarning`` naming the new place.
"""
from __future__ import annotations

import importlib
import warnings


def names(module: str, moved: dict[str, tuple[str, str]]):
    """A ``__getattr__`` for ``module``: ``old name -> (new proc module, new name)``."""

    def __getattr__(name):
        if name in moved:
            new_module, new = moved[name]
            warnings.warn(f"{module}.{name} moved to proc.{new_module}.{new}", DeprecationWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(f"proc.{new_module}"), new)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
