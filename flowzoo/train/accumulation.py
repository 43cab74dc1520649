"""Gradient accumulation (EDM2's ``batch_gpu``): one optimizer step in several forward/backward rounds.

With ``train.batch_per_device`` = n, each rank's batch of B = batch_size / world_size samples runs as
B / n rounds of n samples, and the step is still the step of the whole batch:
  - the randomness is drawn once, for all B samples (``objective.draw`` with the step's generator), and
    each round gets its rows: the noise, t and r, the fm_ratio split (an exact count per batch, which
    drawing per round would change), the label drops and per-sample alpha draws are those of the batch;
  - the data stream yields the whole per-rank batch (its position moves once per step), split the same way;
  - the loss is a mean over the batch of per-sample terms (every weighting, shift velocity and target is
    per sample; DESIGN.md §1), so round i's loss scaled by n_i / B sums to the batch's gradient;
  - DDP synchronises only in the last round (``no_sync`` in the others), FSDP2 likewise
    (``set_requires_gradient_sync(False)``): one all-reduce / reduce-scatter per step, as without rounds
    (tested by counting them). Under FSDP2 each unit then keeps its unsharded fp32 gradient between rounds,
    the full gradient that DDP holds anyway; the parameters and Adam's moments stay sharded;
  - the metrics are merged from the rounds' (the objective's ``merge_metrics``, else a size-weighted mean).
Nothing between steps changes, so checkpoints and resume are as without accumulation. The backbones keep no
batch statistics (no BatchNorm), which is what makes a round's forward that of its rows in the full batch.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

from torch import Tensor, nn


def check_objective(objective: nn.Module) -> None:
    """Refuse, in one sentence, an objective that cannot run in rounds: it needs ``draw(x, y, step,
    generator)`` and a forward that takes those draws as ``drawn=`` (UnifiedObjective, every preset)."""
    forward = inspect.signature(objective.forward).parameters
    if not hasattr(objective, "draw") or "drawn" not in forward:
        raise ValueError(f"train.batch_per_device splits a step into rounds, which needs an objective with draw() and "
                         f"forward(..., drawn=), and {type(objective).__name__} has not both; set batch_per_device "
                         f"to null (one round per step).")


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside, ``model``'s backward synchronises gradients across ranks only when ``enabled``: DDP's
    ``no_sync`` or FSDP2's ``set_requires_gradient_sync``; gradients accumulate locally meanwhile."""
    model = getattr(model, "_orig_mod", model)  # under torch.compile, the module it compiled
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 root (fully_shard)
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:  # a world of one: nothing to synchronise
        yield


def merge_metrics(objective: nn.Module, parts: list[tuple[int, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """The step's metrics from its rounds' (size, metrics): the objective's own merge when it has one."""
    if hasattr(objective, "merge_metrics"):
        return objective.merge_metrics(parts)
    total = sum(size for size, _ in parts)
    return {key: sum(m[key] * (size / total) for size, m in parts) for key in parts[0][1]}


def forward_backward(model: nn.Module, objective: nn.Module, x: Tensor, y: Tensor | None, step: int, generator,
                     rounds: int, autocast) -> tuple[Tensor, dict[str, Tensor]]:
    """One step's gradients in ``rounds`` rounds; returns the batch's (detached) loss and metrics.

    ``model`` is what the step calls (the DDP-wrapped or FSDP2-sharded objective, maybe compiled), so the
    network runs inside the wrapper's forward; ``autocast`` makes the step's autocast context."""
    drawn = objective.draw(x, y, step, generator)  # the whole per-rank batch's randomness, once
    batch = x.shape[0]
    size = batch // rounds
    loss, parts = 0.0, []
    for i in range(rounds):
        rows = slice(i * size, (i + 1) * size)
        with gradient_sync(model, enabled=i == rounds - 1):  # DDP: forward and backward inside no_sync
            with autocast():
                round_loss, metrics = model(x[rows], None, step, drawn=drawn.rows(rows))
            share = size / batch  # the loss is a mean over the batch: round i's rows carry n_i / B of it
            (round_loss * share).backward()
        loss = loss + round_loss.detach() * share
        parts.append((size, metrics))
    return loss, merge_metrics(objective, parts)
