"""Benchmarks: each prints ratios measured side by side in one run (``python -m benchmarks.NAME``)."""

#: Benchmarks of the embedded tier alone (no ``--tier``): ``python -m benchmarks --tier real``
#: and ``benchmarks.compare`` never run them on the real tier.
EMBEDDED_ONLY = frozenset({"calls"})
