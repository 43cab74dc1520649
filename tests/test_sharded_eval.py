"""`flowzoo sample` and `flowzoo eval` under torchrun: two gloo ranks split the samples, rank 0 gathers, and
the samples and metrics are those of one process (every sample depends only on (seed, index)).

The consistency sampler at 2 NFE re-noises between its steps, the case that depended on the batch before
issue 29; the ranks' shares (30 samples each) are batched differently from the single process (60), so the
comparison also covers the batch size. Equality is up to float rounding of differently batched matmuls."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cli import TINY, flowzoo
from test_train_support import REPO, free_port, subprocess_env

EVAL = ["--nfe", "1", "--nfe", "2", "--sampler", "consistency", "--num-samples", "60", "--seed", "3"]


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "toy"
    code, _, _ = flowzoo("run", "--objective", "meanflow", "--data", "toy:8gaussians", "--steps", "4", "--out", str(out),
                         "--set", "eval.num_samples=60", "--set", "eval.previews=false", *TINY)
    assert code == 0
    return out / "checkpoints" / "latest.pt"


def two_ranks(*args: str) -> None:
    """`flowzoo ARGS` as torchrun starts it: two processes with RANK / WORLD_SIZE / MASTER_* set."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "flowzoo", *args],
                              env=subprocess_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                                 MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO) for r in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out


def test_two_ranks_sample_and_evaluate_exactly_what_one_process_does(toy_checkpoint, tmp_path):
    code, _, _ = flowzoo("eval", "--checkpoint", str(toy_checkpoint), *EVAL)
    assert code == 0
    written = toy_checkpoint.with_suffix(".eval-seed3.json")
    single = json.loads(written.read_text())
    shutil.move(written, tmp_path / "single.json")
    code, _, _ = flowzoo("sample", "--checkpoint", str(toy_checkpoint), "--nfe", "2", "--sampler", "consistency",
                         "--num-samples", "60", "--seed", "3", "--out", str(tmp_path / "one"))
    assert code == 0

    two_ranks("eval", "--checkpoint", str(toy_checkpoint), *EVAL)
    two_ranks("sample", "--checkpoint", str(toy_checkpoint), "--nfe", "2", "--sampler", "consistency",
              "--num-samples", "60", "--seed", "3", "--out", str(tmp_path / "two"))
    sharded = json.loads(written.read_text())
    assert set(sharded["results"]) == set(single["results"]) == {"consistency@1", "consistency@2"}
    for key, row in single["results"].items():
        assert sharded["results"][key].keys() == row.keys()
        for metric, value in row.items():
            assert sharded["results"][key][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, metric)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one["samples"].shape == two["samples"].shape == (60, 2)
    np.testing.assert_allclose(two["samples"], one["samples"], rtol=0, atol=1e-5)
    assert (tmp_path / "two.png").is_file()
