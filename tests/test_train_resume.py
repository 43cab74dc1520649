"""Kill -9 a training process and run the same command again: it must end bit for bit where an
uninterrupted run ends (CPU), and a kill inside a checkpoint write must never corrupt latest.pt.

Each run is a subprocess of the script below; the uninterrupted reference runs alongside the first
killed run (that one is slowed down by a per-batch sleep, so there is time to kill it mid-way).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from flowzoo.train import load_checkpoint
from test_train_support import finish, launch

STEPS = 24

SCRIPT = '''
import os, sys, time
import torch
torch.set_num_threads(1)
from flowzoo.objectives import create_objective
from flowzoo import atomic
from flowzoo.train import TrainOptions, train
from test_train_support import MixtureStream, tiny_dit

out_dir, mode = sys.argv[1], sys.argv[2]
if mode == "pause_in_write":
    # Stop inside the second write of latest.pt: its temp file is complete and fsync'ed, the rename not done.
    real_replace, writes = atomic.replace, []
    def paused_replace(tmp, path):
        if path.name == "latest.pt":
            writes.append(path)
            if len(writes) == 2:
                open(os.path.join(out_dir, "paused"), "w").close()
                time.sleep(600)
        real_replace(tmp, path)
    atomic.replace = paused_replace

net = tiny_dit(seed=0)
# alphaflow over the whole run (alpha 1 -> 0: two-point and JVP targets) from the EMA target network.
objective = create_objective("alphaflow", net, total_steps=STEPS, target_network="ema")
opts = TrainOptions(out_dir=out_dir, steps=STEPS, batch_size=8, warmup_steps=4, log_every=1, checkpoint_every=6,
                    keep_last=2, sample_every=1000, ema_halflives=[4.0, 50.0], quiet=True)
stream = MixtureStream(8, opts.seed, delay=float(os.environ.get("STEP_DELAY", "0")))
state = train(opts, net, objective, stream)
torch.save({"net": state.net.state_dict(), "emas": [e.net.state_dict() for e in state.emas]},
           os.path.join(out_dir, "final.pt"))
'''.replace("STEPS", str(STEPS))


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "train_script.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def reference(script):
    """The uninterrupted run, started once and awaited by whichever test needs it first."""
    out = script.parent / "reference"
    proc = launch(script, out, "run")
    result = {}

    def final() -> dict:
        if not result:
            finish(proc)
            result.update(torch.load(out / "final.pt", weights_only=True))
        return result

    yield final
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_for(condition, proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run to reach the kill point")
        time.sleep(0.02)


def logged_steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:  # the line being written right now
            pass
    return steps


def sigkill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def assert_same_final(out: Path, reference: dict) -> None:
    final = torch.load(out / "final.pt", weights_only=True)
    for key, tensor in reference["net"].items():
        assert torch.equal(final["net"][key], tensor), f"parameter {key} differs after resuming"
    for i, ema in enumerate(reference["emas"]):
        for key, tensor in ema.items():
            assert torch.equal(final["emas"][i][key], tensor), f"EMA {i} {key} differs after resuming"


def test_sigkill_mid_run_then_resume_is_bit_exact(script, reference):
    reference  # noqa: B018  (starts the reference run now, in parallel)
    out = script.parent / "killed"
    proc = launch(script, out, "run", STEP_DELAY="0.15")
    latest = out / "checkpoints" / "latest.pt"
    # A checkpoint exists and the run went a few steps past it: the resumed run must redo those steps.
    wait_for(lambda: latest.exists() and max(logged_steps(out), default=0) >= 9, proc)
    sigkill(proc)
    saved = load_checkpoint(latest)["step"]
    assert saved < STEPS and max(logged_steps(out)) >= saved and not (out / "final.pt").exists()

    finish(launch(script, out, "run"))  # the same command again
    assert logged_steps(out) == list(range(1, STEPS + 1))  # lines of the lost steps replaced, not duplicated
    assert_same_final(out, reference())


def test_sigkill_inside_a_checkpoint_write_keeps_latest_intact(script, reference):
    out = script.parent / "killed_in_write"
    proc = launch(script, out, "pause_in_write")
    wait_for(lambda: (out / "paused").exists(), proc)
    sigkill(proc)
    ckpt_dir = out / "checkpoints"
    stale = [p for p in ckpt_dir.iterdir() if ".tmp-" in p.name]
    assert len(stale) == 1 and stale[0].name.startswith(".latest.pt.tmp-")  # the complete, unrenamed temp file
    assert load_checkpoint(ckpt_dir / "latest.pt")["step"] == 6  # still the previous checkpoint, and it loads

    finish(launch(script, out, "run"))
    assert not any(".tmp-" in p.name for p in ckpt_dir.iterdir())  # cleaned on resume
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.pt", "step-00000018.pt", "step-00000024.pt"]
    assert_same_final(out, reference())
