#!/usr/bin/env bash
# Issue 16's GPU check: one script, one H100, under 8 minutes, one table (see benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --smoke    # the same code paths on a CPU (tiny DiT), to check the script
# Needs flowzoo installed with its GPU extra (pip install -e '.[gpu]': the jvp-flash-attention kernel);
# without it the jvp_flash rows say why they cannot run and everything else still runs.
# Output: the table on stdout (paste it into docs/gpu.md with the device it names) and
# runs/gpu_check/record.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
