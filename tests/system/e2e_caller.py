"""A caller in a process of its own: ``python e2e_caller.py [--wait] COLLECTION ID [ID ...]``.

With ``--wait`` it loads the documents, prints ``loaded``, and calls only after a line
arrives on stdin (so a test can stop the database in between).

Calls ``run()`` on each document, as an application would, with the environment the test
gives it (``MONGODB_URI``, ``CELERY_BROKER_URL``, ``PROC_MODELS``). A ``ProcError`` is
printed as ``Type: message`` on stderr and ends it with exit code 1.
"""
from __future__ import annotations

import sys

from bson import ObjectId

from proc import ProcError, registry


def main(argv: list[str]) -> int:
    wait = argv[:1] == ["--wait"]
    if wait:
        argv = argv[1:]
    collection, ids = argv[0], argv[1:]
    cls = registry.class_for(collection)
    docs = [cls.objects.get(pk=ObjectId(value)) for value in ids]
    if wait:
        print("loaded", flush=True)
        sys.stdin.readline()
    for doc in docs:
        try:
            doc.run()
        except ProcError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
