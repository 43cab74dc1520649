"""Benchmarks of flowzoo's own machinery (as opposed to ``benchmarks/``, the named training suites).

``flowzoo bench perf``: each objective's training-step cost as a ratio to flow matching (``perf.py``).
"""

from flowzoo.bench.perf import perf_command, run_perf

__all__ = ["perf_command", "run_perf"]
