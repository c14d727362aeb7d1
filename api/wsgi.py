"""The WSGI entry point of a separate server process: ``gunicorn api.wsgi:app``.

It refuses the embedded database and documents in the old shape before creating the
app (``procctl serve`` runs the same checks first, so it fails with a clear message).
"""
from api import create_app
from migrations import guard
from proc import startup

startup.check_separate_process("The status page server (gunicorn api.wsgi:app)",
                               checks=[guard.refuse_if_legacy])
app = create_app()
