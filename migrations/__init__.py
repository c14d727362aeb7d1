"""Datafixes: versioned, resumable, locked, dry-runnable migrations of Proc documents in place.

Layout (Alembic-style): ``command`` holds the commands as plain functions, ``cli`` wraps
them (``procctl datafix``), ``runner``/``ledger``/``lock``/``backup``/``keyset`` are the
runtime, ``script`` finds the files in ``versions/``. See docs/datafix.md.
"""
