"""The database: one connection per process (``db``) and the embedded client (``embedded``).

Above the facts (``config``, ``exceptions``, ``redact``); below everything that reads or writes
a document."""
