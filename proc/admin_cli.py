"""Deprecated: moved to ``proc.cli.admin``. Kept for one release; importing it warns."""
import warnings

from proc.cli.admin import *  # noqa: F401,F403
from proc.cli.admin import admin, actor, parse_id  # noqa: F401

warnings.warn("proc.admin_cli is deprecated: use proc.cli.admin", DeprecationWarning, stacklevel=2)
