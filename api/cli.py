"""Deprecated: moved to ``proc.cli.serve``. Kept for one release; importing it warns."""
import warnings

from proc.cli.serve import *  # noqa: F401,F403
from proc.cli.serve import GunicornServer, check_bind, check_can_serve, is_loopback, serve  # noqa: F401

warnings.warn("api.cli is deprecated: use proc.cli.serve", DeprecationWarning, stacklevel=2)
