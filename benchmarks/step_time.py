"""Superseded by ``flowzoo bench perf`` (flowzoo/bench/perf.py): kept as a thin wrapper around it.

    python benchmarks/step_time.py --threads 1 --rounds 10        # same options as flowzoo bench perf
"""

from __future__ import annotations

import typer

from flowzoo.bench.perf import perf_command

if __name__ == "__main__":
    typer.run(perf_command)
