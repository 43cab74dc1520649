"""Every preset at the default budget of a built-in dataset: the numbers the README quotes.

Runs ``flowzoo run --objective NAME --data DATA`` for each preset (in parallel, one thread each, so the
runs do not oversubscribe the cores), then prints one Markdown table of the 1- and 2-NFE metrics from
their result.json files beside the reference floors. Finished runs are not retrained (flowzoo run
resumes), so re-running this only re-reads the records.

    python benchmarks/default_budget.py --data digits --jobs 2
    python benchmarks/default_budget.py --data toy:8gaussians --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flowzoo.registry import OBJECTIVES

COLUMNS = {
    "digits": ["class_acc", "fd", "memorisation"],
    "toy": ["support_frac", "mode_coverage", "swd", "mmd"],
}


def run_one(objective: str, data: str, out: Path, extra: list[str], schedule: str | None) -> tuple[str, int, str]:
    cmd = [sys.executable, "-m", "flowzoo", "run", "--objective", objective, "--data", data, "--out", str(out), "--quiet"]
    if schedule:
        cmd += ["--schedule", schedule]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd + extra, env=env, capture_output=True, text=True)
    return objective, proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.returncode else ""


def table(data: str, records: dict[str, dict]) -> str:
    cols = COLUMNS["toy" if data.startswith("toy:") else "digits"]
    lines = ["| objective | sampler@nfe | " + " | ".join(cols) + " | wall time (s) |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    reference = {}
    for objective, record in records.items():
        reference = record["reference"]
        for key, row in record["results"].items():
            values = " | ".join(_fmt(row.get(c)) for c in cols)
            lines.append(f"| {objective} | {key} | {values} | {record['provenance']['wall_time_s']:.0f} |")
    floor_set = "heldout" if "heldout/fd" in reference else "real"
    lines.append(f"| real data ({floor_set}, the floor) | | " + " | ".join(_fmt(reference.get(f"{floor_set}/{c}")) for c in cols) + " | |")
    if "class_means/fd" in reference:
        lines.append("| class-mean images (reference) | | " + " | ".join(_fmt(reference.get(f"class_means/{c}")) for c in cols) + " | |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--runs", default="runs/default-budget", help="folder for the run directories")
    parser.add_argument("--objectives", nargs="*", default=None, help="default: every registered preset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    objectives = args.objectives or OBJECTIVES.names()
    root = Path(args.runs) / args.data.replace(":", "-")
    outs = {name: root / f"{name}-s{args.seed}" for name in objectives}
    extra = ["--seed", str(args.seed)]
    with ThreadPoolExecutor(args.jobs) as pool:
        # alphaflow with its sigmoid curriculum, as in the README's main command
        jobs = [pool.submit(run_one, n, args.data, outs[n], extra, "sigmoid" if n == "alphaflow" else None) for n in objectives]
        for job in jobs:
            name, code, why = job.result()
            if code:
                print(f"{name}: failed ({why})", file=sys.stderr)
    records = {n: json.loads((outs[n] / "result.json").read_text()) for n in objectives if (outs[n] / "result.json").is_file()}
    print(table(args.data, records))


if __name__ == "__main__":
    main()
