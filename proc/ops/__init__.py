"""Operator actions: each written once over a list of processes (``actions``), on one process
named by collection and id (``admin``: that path with one element), on every process a filter
matches (``bulk``: planning, dry run, batches of that path, the audit), and the one filter of
lists and bulk actions (``filters``).

The top layer of the core: it may use every layer below; nothing in the core imports it."""
