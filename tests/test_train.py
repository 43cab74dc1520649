"""The training loop in-process: every registered objective trains; options, EMA, checkpoints, resume,
non-finite steps, hooks and progress output."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from flowzoo.objectives import create_objective
from flowzoo.registry import OBJECTIVES
from flowzoo.train import (CheckpointError, TrainOptions, TrainProgress, TrainingDiverged, ema_beta, learning_rate,
                           load_checkpoint, train)
from flowzoo.train.checkpoint import atomic_save, checkpoint_dir
from flowzoo.train.state import rng_state, set_rng_state
from test_train_support import MixtureDataset, MixtureStream, one_thread, tiny_dit, tiny_mlp  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")



def options(tmp_path, **kw) -> TrainOptions:
    base = dict(out_dir=str(tmp_path / "run"), steps=4, batch_size=8, warmup_steps=2, log_every=1,
                checkpoint_every=2, sample_every=100, ema_halflives=[10.0], quiet=True)
    return TrainOptions(**{**base, **kw})


def read_metrics(opts: TrainOptions) -> list[dict]:
    with open(f"{opts.out_dir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_trains_a_tiny_dit(name, tmp_path):
    net = tiny_dit()
    before = flat(net).clone()
    opts = options(tmp_path, steps=3)
    objective = create_objective(name, net, total_steps=opts.steps)
    state = train(opts, net, objective, MixtureStream(opts.batch_size, opts.seed))
    lines = read_metrics(opts)
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in lines)
    assert lines[-1]["images_seen"] == 3 * 8 and state.images_seen == 24 and state.skipped_steps == 0
    assert not torch.equal(flat(net), before)
    assert not torch.equal(flat(state.ema_net), before)  # the EMA moved too


def test_options_validate_and_round_trip(tmp_path):
    opts = options(tmp_path)
    assert TrainOptions.from_dict(opts.to_dict()) == opts
    assert isinstance(opts.to_dict()["betas"], list)
    with pytest.raises(ValueError, match="precision must be one of"):
        options(tmp_path, precision="fp16")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainOptions.from_dict({"stepz": 3})


def test_learning_rate_warms_up_linearly_then_stays():
    opts = TrainOptions(lr=1e-3, warmup_steps=4)
    assert [learning_rate(opts, k) for k in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(opts.replace(warmup_steps=0), 0) == 1e-3
    cool = opts.replace(warmup_steps=0, steps=100, lr_cooldown_frac=0.2)  # last 20 steps: 1e-3 -> 0 linearly
    assert [learning_rate(cool, k) for k in (0, 79, 80, 90, 99)] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-5])


def test_ema_halflife_ramps_up_like_edm2():
    assert ema_beta(6931, 10**7) == pytest.approx(0.9999, abs=1e-6)  # the recipe's halflife
    assert ema_beta(6931, 100) == pytest.approx(0.5 ** (1 / 5.0))  # min(6931, 0.05 * 100) = 5 steps
    assert ema_beta(6931, 0) == 0.0  # starts as a copy
    assert ema_beta(10, 0, rampup_ratio=None) == pytest.approx(0.5 ** 0.1)


def test_resume_in_process_is_bit_exact(tmp_path):
    """8 steps straight == 5 steps, then the same call with steps=8 (fresh net, objective and stream)."""

    def run(out, steps, init_seed):
        net = tiny_mlp(init_seed)
        objective = create_objective("alphaflow", net, total_steps=8, target_network="ema")
        opts = options(tmp_path, out_dir=str(tmp_path / out), steps=steps, checkpoint_every=3)
        return train(opts, net, objective, MixtureStream(8, opts.seed))

    straight = run("a", 8, 0)
    run("b", 5, 0)
    resumed = run("b", 8, 1)  # a different init: everything must come from the checkpoint
    assert torch.equal(flat(straight.net), flat(resumed.net))
    assert torch.equal(flat(straight.ema_net), flat(resumed.ema_net))
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert [r["step"] for r in read_metrics(resumed.options)] == list(range(1, 9))


def test_checkpoint_layout_pruning_and_weights_only(tmp_path):
    opts = options(tmp_path, steps=10, checkpoint_every=2, keep_last=2, ema_halflives=[5.0, 20.0])
    net = tiny_mlp()
    train(opts, net, create_objective("meanflow", net), MixtureStream(8, 0))
    ckpt_dir = checkpoint_dir(opts.out_dir)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.pt", "step-00000008.pt", "step-00000010.pt"]
    ckpt = load_checkpoint(ckpt_dir / "latest.pt")  # weights_only=True inside
    assert ckpt["step"] == 10 and ckpt["images_seen"] == 80 and ckpt["world_size"] == 1
    assert [e["halflife"] for e in ckpt["ema"]] == [5.0, 20.0]
    assert ckpt["options"] == opts.to_dict()
    assert ckpt["objective"]["config"]["alpha"] == 0.0
    assert ckpt["ranks"][0]["data"] == {"position": 10, "seed": 0}
    assert set(ckpt["ranks"][0]["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert torch.equal(ckpt["model"]["output.weight"], net.output.weight)

    # A temp file left by a killed writer is ignored and cleaned by the next run; a changed batch is refused.
    (ckpt_dir / ".latest.pt.tmp-99999").write_bytes(b"torn")
    train(opts, net, create_objective("meanflow", net), MixtureStream(8, 0))
    assert not (ckpt_dir / ".latest.pt.tmp-99999").exists()
    with pytest.raises(CheckpointError, match="batch_size=8"):
        train(opts.replace(batch_size=4), net, create_objective("meanflow", net), MixtureStream(4, 0))


def test_rng_state_round_trips_through_weights_only(tmp_path):
    state = rng_state()
    atomic_save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


class BadSteps(nn.Module):
    """Wraps an objective; on the given steps its loss (or only its gradient) becomes NaN."""

    def __init__(self, objective: nn.Module, steps: set[int], where: str = "loss"):
        super().__init__()
        self.objective, self.steps, self.where = objective, steps, where

    def set_target_network(self, net):
        self.objective.set_target_network(net)

    def forward(self, x, y, step, generator):
        loss, metrics = self.objective(x, y, step, generator)
        if step in self.steps:
            loss = loss * float("nan") if self.where == "loss" else NaNGradient.apply(loss)
        return loss, metrics


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_isolated_nonfinite_steps_are_skipped(where, tmp_path):
    opts = options(tmp_path, steps=6, max_nonfinite=2)
    net = tiny_mlp()
    state = train(opts, net, BadSteps(create_objective("flow_matching", net), {2, 4}, where), MixtureStream(8, 0))
    assert state.step == 6 and state.skipped_steps == 2
    assert torch.isfinite(flat(net)).all() and torch.isfinite(flat(state.ema_net)).all()
    assert read_metrics(opts)[-1]["skipped_steps"] == 2


def test_nonfinite_streak_stops_with_one_sentence_and_keeps_the_checkpoint(tmp_path):
    opts = options(tmp_path, steps=20, checkpoint_every=4, max_nonfinite=3)
    net = tiny_mlp()
    seen = {}

    def remember(step, state):
        seen[step] = flat(state.net).clone()

    with pytest.raises(TrainingDiverged) as info:
        train(opts.replace(sample_every=6), net, BadSteps(create_objective("flow_matching", net), set(range(6, 20))),
              MixtureStream(8, 0), hooks=[remember])
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert "step 9" in message and "non-finite for 3 steps in a row" in message and "(step 4)" in message
    ckpt = load_checkpoint(checkpoint_dir(opts.out_dir) / "latest.pt")
    assert ckpt["step"] == 4  # the step-8 checkpoint fell inside the streak and was not written
    assert torch.equal(flat(net), seen[6])  # no update after the last good step


def test_hooks_run_every_sample_every_steps_and_at_the_end(tmp_path):
    calls = []
    opts = options(tmp_path, steps=7, sample_every=3, grad_clip=None)
    net = tiny_mlp()
    train(opts, net, create_objective("flow_matching", net), MixtureStream(8, 0),
          hooks=[lambda step, state: calls.append((step, state.images_seen, state.ema_net is state.emas[0].net))])
    assert calls == [(3, 24, True), (6, 48, True), (7, 56, True)]


def test_dataset_objects_and_batch_mismatch(tmp_path):
    opts = options(tmp_path, steps=2)
    net = tiny_mlp()
    state = train(opts, net, create_objective("flow_matching", net), MixtureDataset())
    assert state.step == 2
    with pytest.raises(ValueError, match="batch_size / world_size = 8"):
        train(options(tmp_path, out_dir=str(tmp_path / "other")), net, create_objective("flow_matching", net),
              MixtureStream(4, 0))


def test_progress_plain_lines_rich_bar_and_quiet(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # rich sizes its bar to the terminal
    stats = {"loss": 0.5, "alpha": 0.25, "fm_ratio": 0.5, "steps_per_s": 10.0}
    plain = io.StringIO()
    progress = TrainProgress(100, 0, stream=plain, min_interval_s=3600)
    for step in (10, 20):  # the second is rate-limited away
        progress.advance(step)
        progress.report(step, stats)
    progress.report(100, stats, final=True)
    progress.close()
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step 10/100 (10.0%)")
    assert "loss 0.5" in lines[0] and "alpha 0.25" in lines[0] and "10 steps/s" in lines[0] and "ETA 0m09s" in lines[0]

    tty = io.StringIO()
    bar = TrainProgress(100, 0, stream=tty, interactive=True)
    bar.report(50, stats)
    bar.close()
    assert "50/100" in tty.getvalue() and "fm_ratio 0.5" in tty.getvalue()

    silent = io.StringIO()
    quiet = TrainProgress(100, 0, quiet=True, stream=silent)
    quiet.report(100, stats, final=True)
    quiet.close()
    assert silent.getvalue() == ""
