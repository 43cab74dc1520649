"""Wall time of one short toy run with torch's default thread count and with `--threads 1`, side by side.

On a shared machine (other jobs running) the default thread count oversubscribes the cores and every
thread waits for the others at each op; one thread per process is then often many times faster. Run:
    .venv/bin/python benchmarks/threads.py [--steps 300] [--rounds 2]
It prints each configuration's wall time per round and the ratio default / --threads 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def one_run(steps: int, threads: int | None) -> float:
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "flowzoo.cli", "run", "--objective", "flow_matching", "--data", "toy:8gaussians",
                "--steps", str(steps), "--out", out, "--quiet", "--set", "eval.previews=false"]
        if threads is not None:
            args += ["--threads", str(threads)]
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        start = time.perf_counter()
        subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    a = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f}; {a.steps}-step flow-matching run on toy:8gaussians")
    for k in range(a.rounds):  # interleaved, so both see the same load
        default, single = one_run(a.steps, None), one_run(a.steps, 1)
        print(f"round {k}: default threads {default:7.1f} s   --threads 1 {single:7.1f} s   ratio {default / single:5.2f}x")


if __name__ == "__main__":
    main()
