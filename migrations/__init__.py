"""Datafixes: versioned, resumable, locked, dry-runnable migrations of Proc documents in place.

Layout (Alembic-style): ``command`` holds the commands as plain functions, ``cli`` wraps
them (``procctl datafix``), ``runner``/``ledger``/``lock``/``backup``/``keyset``/``match``
are the runtime, ``history`` reads the ledger back, ``script`` finds the files of every
sequence (``versions/`` is proc's own). See docs/datafix.md.
"""
