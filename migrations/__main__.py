"""``python -m migrations ...``: the same commands as ``procctl datafix ...``."""
from .cli import main

main()
