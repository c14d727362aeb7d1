"""Deprecated: moved to ``proc.cli.monitor``. Kept for one release; importing it warns."""
import warnings

from proc.cli.monitor import *  # noqa: F401,F403
from proc.cli.monitor import monitor  # noqa: F401

warnings.warn("proc.monitor_cli is deprecated: use proc.cli.monitor", DeprecationWarning, stacklevel=2)
