"""A demo domain: uploads whose entries are processed as child processes, and projects
whose 9 prechecks run with a concurrency limit of 4. ``procctl demo`` runs it."""
