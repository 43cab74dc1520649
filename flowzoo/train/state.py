"""What a training run is at a step, and its round trip through a checkpoint.

``TrainState`` is what the loop mutates, what hooks receive and what ``train()`` returns.
``checkpoint_contents`` / ``restore`` turn it into plain tensors and python values and back, so a
resumed run continues with exactly the numbers the uninterrupted one would have produced: model,
EMA(s), Adam state, step (which also fixes the alpha / fm_ratio schedules: they are pure functions
of the step), every rank's RNG states and data-stream position, the objective's config and the options.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowzoo.train import distributed
from flowzoo.train.checkpoint import CheckpointError, first_mismatch
from flowzoo.train.ema import EMA
from flowzoo.train.options import TrainOptions

FORMAT = "flowzoo.train/1"


@dataclass
class TrainState:
    options: TrainOptions
    net: nn.Module  # the bare network (never the DDP / compiled wrapper; FSDP2-sharded in place under parallel=fsdp)
    emas: list[EMA]
    optimizer: torch.optim.Optimizer
    rank: int = 0
    world_size: int = 1
    step: int = 0  # optimizer steps taken, skipped non-finite steps included
    nonfinite_in_a_row: int = 0
    skipped_steps: int = 0  # non-finite steps skipped over the whole run
    wall_time: float = 0.0  # seconds spent training, summed over resumes
    last_checkpoint_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the last line written to metrics.jsonl

    @property
    def images_seen(self) -> int:
        return self.step * self.options.batch_size

    @property
    def out_dir(self) -> Path:
        return Path(self.options.out_dir)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ema_net(self) -> nn.Module:
        """The first EMA (the one sampled and used as the target network), or the network without one."""
        return self.emas[0].net if self.emas else self.net


def rng_state() -> dict[str, Any]:
    """This process's global RNG states as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def objective_description(objective: nn.Module) -> dict[str, Any]:
    config = getattr(objective, "config", None)
    return {
        "class": f"{type(objective).__module__}.{type(objective).__qualname__}",
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
    }


def checkpoint_contents(state: TrainState, objective: nn.Module, rank_states: list[dict]) -> dict[str, Any]:
    """``rank_states``: one {"rng", "data"} per rank (gathered), so each rank resumes its own stream.

    Call it on every rank: for an FSDP2-sharded network, gathering the full model and optimizer state
    is a collective (only rank 0's result holds them, and only rank 0 writes)."""
    return {
        "format": FORMAT,
        "step": state.step,
        "images_seen": state.images_seen,
        "world_size": state.world_size,
        "model": distributed.model_state(state.net),
        "ema": [ema.state_dict() for ema in state.emas],
        "optimizer": distributed.optimizer_state(state.net, state.optimizer),
        "ranks": rank_states,
        "objective": objective_description(objective),
        "options": state.options.to_dict(),
        "counters": {"skipped_steps": state.skipped_steps, "nonfinite_in_a_row": state.nonfinite_in_a_row,
                     "wall_time": state.wall_time},
    }


def is_training_checkpoint(ckpt: Any) -> bool:
    """A loaded file that restore() can read (a torn or foreign file is not)."""
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and "step" in ckpt


def fits_network(net: nn.Module, ckpt: dict[str, Any]) -> bool:
    """Whether the checkpoint's model weights have ``net``'s names and shapes (not another backbone size's)."""
    own, saved = net.state_dict(), ckpt.get("model")
    return (isinstance(saved, dict) and set(own) == set(saved)
            and all(tuple(own[k].shape) == tuple(getattr(saved[k], "shape", ())) for k in own))


def restore(state: TrainState, ckpt: dict[str, Any], stream, path: Path) -> None:
    """Load ``ckpt`` into ``state`` and this rank's data stream; refuse what cannot continue exactly."""
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a flowzoo training checkpoint (format {ckpt.get('format')!r}).")
    saved = ckpt["options"]
    opts = state.options
    for key in ("batch_size", "seed"):
        if saved[key] != getattr(opts, key):
            raise CheckpointError(
                f"{path} was written with {key}={saved[key]} but this run asks for {key}={getattr(opts, key)}; "
                f"use the original value to resume, or a new out_dir to start over."
            )
    if ckpt["world_size"] != state.world_size:
        raise CheckpointError(
            f"{path} was written by {ckpt['world_size']} processes but this run has {state.world_size}; "
            f"resume with the same number of processes (the data positions are per rank)."
        )
    if len(ckpt["ema"]) != len(state.emas):
        raise CheckpointError(f"{path} holds {len(ckpt['ema'])} EMA(s) but this run asks for {len(state.emas)}; "
                              f"keep ema_halflives as in the original run.")
    try:
        distributed.load_model_state(state.net, ckpt["model"])  # a sharded network keeps this rank's shards
    except RuntimeError as exc:  # torch's message lists every mismatched tensor, one per line
        raise CheckpointError(f"{path} holds weights of another network ({first_mismatch(exc)}); resume with the "
                              f"backbone it was trained with, or pass a new --out.") from None
    for ema, ema_state in zip(state.emas, ckpt["ema"]):
        ema.load_state_dict(ema_state)
    distributed.load_optimizer_state(state.net, state.optimizer, ckpt["optimizer"])
    for group in state.optimizer.param_groups:  # the options of this run win over the saved hyper-parameters
        group.update(betas=opts.betas, eps=opts.eps, weight_decay=opts.weight_decay)
    state.step = int(ckpt["step"])
    state.last_checkpoint_step = state.step
    counters = ckpt["counters"]
    state.skipped_steps = int(counters["skipped_steps"])
    state.nonfinite_in_a_row = int(counters["nonfinite_in_a_row"])
    state.wall_time = float(counters["wall_time"])
    mine = ckpt["ranks"][state.rank]
    stream.load_state_dict(mine["data"])
    set_rng_state(mine["rng"])
