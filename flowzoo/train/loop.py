"""The training loop: one function that reads top to bottom (after EDM2's ``training_loop``).

    state = train(TrainOptions(out_dir="runs/x", steps=1000, batch_size=64), net, objective, dataset)

To resume, run the same command again: ``train`` continues from ``out_dir/checkpoints/latest.pt``
and, on CPU, ends bit for bit where an uninterrupted run would have. What makes that true:
  - every step's randomness (noise, times, label dropout) comes from a generator seeded with
    (seed, rank, step), never from a global RNG, so it does not depend on how the run got there;
  - the data stream is a pure function of (seed, position) and its position is checkpointed;
  - schedules (alpha, fm_ratio, LR warm-up, EMA ramp-up) are pure functions of the step.
Under torchrun each rank trains on batch_size / world_size samples and DDP averages the gradients
(or, with ``parallel="fsdp"``, FSDP2 shards the network's blocks and reduce-scatters them: see
flowzoo/train/distributed.py for what is sharded, saved and refused). With ``batch_per_device`` a rank's
share runs in several forward/backward rounds of one full-batch draw (flowzoo/train/accumulation.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import sys
import time
from typing import Callable, Iterable

import torch
from torch import nn

from flowzoo.loggers import Trackers, opened
from flowzoo.precision import set_tf32
from flowzoo.train import accumulation, checkpoint, distributed, interrupt
from flowzoo.train.ema import EMA
from flowzoo.train.metrics import MetricsLog, MetricWindow
from flowzoo.train.options import TrainOptions
from flowzoo.train.progress import TrainProgress
from flowzoo.train.state import (TrainState, checkpoint_contents, fits_network, is_training_checkpoint, restore,
                                 rng_state)

Hook = Callable[[int, TrainState], None]

# Tags keep the seed families of the objective's draws and of the data apart.
OBJECTIVE_SEED, DATA_SEED = 1, 2


class TrainingDiverged(RuntimeError):
    """The loss or gradient stayed non-finite for max_nonfinite steps in a row; the message is one sentence."""


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (a hash, so neighbouring keys give unrelated streams)."""
    digest = hashlib.blake2b(",".join(str(int(k)) for k in keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def learning_rate(options: TrainOptions, step: int) -> float:
    """Linear warm-up over warmup_steps (lr/warmup at the first step), then constant, then optionally a
    linear cool-down to 0 over the last lr_cooldown_frac of the run (short runs end sharper with it)."""
    lr = options.lr
    if options.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / options.warmup_steps)
    cooldown = options.lr_cooldown_frac * options.steps
    if cooldown > 0:
        lr *= min(1.0, (options.steps - step) / cooldown)
    return lr


def open_stream(data, batch_size: int, seed: int, env: distributed.DistEnv):
    """This rank's DataStream: ``data`` is a stream already (built for this rank) or a dataset."""
    if hasattr(data, "next") and hasattr(data, "state_dict"):
        return data
    if not hasattr(data, "stream"):
        raise TypeError(f"train() needs a data stream (next/state_dict) or a dataset (stream), not {type(data).__name__}.")
    params = inspect.signature(data.stream).parameters
    if "rank" in params and "world_size" in params:  # flowzoo.data: the dataset splits the world itself
        return data.stream(batch_size, seed, rank=env.rank, world_size=env.world_size)
    return data.stream(batch_size, seed if env.world_size == 1 else mix_seed(DATA_SEED, seed, env.rank))


def clip_gradients(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The global gradient norm before clipping (clipping to max_norm when it is set).

    FSDP2's gradients are DTensor shards: torch's norm of them is the norm over all ranks' shards (a
    DTensor, returned here as a plain tensor of that value), and clipping scales every shard by it."""
    if max_norm is None:
        grads = [p.grad for p in params if p.grad is not None]
        if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
            return distributed.replicated(torch.nn.utils.get_total_norm(grads))
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return distributed.replicated(torch.nn.utils.clip_grad_norm_(params, max_norm))


def train(
    options: TrainOptions,
    net: nn.Module,
    objective: nn.Module,
    data,
    hooks: Iterable[Hook] = (),
    trackers: Trackers | None = None,
) -> TrainState:
    """Train ``net`` with ``objective`` (built around ``net``) on ``data``; returns the final TrainState.

    data: a DataStream for this rank (``next() -> (x, y)``, ``state_dict``, ``load_state_dict``) yielding
        batches of batch_size / world_size, or a dataset whose ``stream(batch_size, seed, ...)`` builds one.
    hooks: ``hook(step, state)`` called on every rank every sample_every steps and once at the end (e.g.
        to write sample grids from ``state.ema_net``); write files only where ``state.is_main``.
    trackers: where each metrics.jsonl line also goes (flowzoo.loggers.Trackers, kept open by the caller, who
        logs evaluations to them too); default: the loggers options.loggers names, on rank 0, for this call.
    Raises TrainingDiverged after max_nonfinite non-finite steps in a row (the last checkpoint is intact).
    """
    opts = options
    hooks = list(hooks)
    if getattr(objective, "net", net) is not net:
        raise ValueError("the objective was built around another network; pass the network it trains as `net`.")
    if not opts.ema_halflives and getattr(getattr(objective, "config", None), "target_network", None) == "ema":
        raise ValueError("this objective takes its target from the EMA network but ema_halflives is empty; give one.")
    distributed.check_parallel(opts.parallel, objective, opts.compile)  # what FSDP2 cannot run, in one sentence

    with distributed.session(opts.device) as env:  # joins torchrun's world; destroys the group on exit
        local_batch, rounds = opts.per_rank(env.world_size)  # samples per rank, forward/backward rounds per step
        if rounds > 1:
            accumulation.check_objective(objective)
        device = env.device

        # Network, EMA(s), optimizer, data.
        net.to(device).train()
        objective.to(device)
        emas = [EMA(net, halflife, opts.ema_rampup_ratio) for halflife in opts.ema_halflives]
        if emas and hasattr(objective, "set_target_network"):
            objective.set_target_network(emas[0].net)  # read by presets with target_network="ema" (Shortcut)
        # FSDP2 shards in place, before the optimizer is built (the parameters become DTensor shards); the EMAs
        # above stay full copies, and `shell` receives the final full weights for state.net at the end.
        fsdp = opts.parallel == "fsdp" and env.distributed
        shell = distributed.meta_copy(net) if fsdp else None
        if fsdp:
            distributed.shard_objective(objective, net, env)
        optimizer = torch.optim.Adam(net.parameters(), lr=opts.lr, betas=opts.betas, eps=opts.eps,
                                     weight_decay=opts.weight_decay)
        stream = open_stream(data, local_batch, opts.seed, env)
        state = TrainState(opts, net, emas, optimizer, rank=env.rank, world_size=env.world_size)

        # Resume: the same command continues from checkpoints/latest.pt.
        ckpt_dir = checkpoint.checkpoint_dir(opts.out_dir)
        # An unreadable latest.pt falls back to the newest readable periodic one and is set aside.
        # So does one of another network (e.g. another backbone size): both are set aside, never overwritten.
        usable = lambda ckpt: is_training_checkpoint(ckpt) and fits_network(net, ckpt)  # noqa: E731
        resumed = checkpoint.load_resume_point(opts.out_dir, usable, writer=env.is_main,
                                               say=lambda line: env.is_main and print(line, file=sys.stderr))
        if resumed is not None:
            restore(state, resumed[1], stream, resumed[0])
        if env.is_main:
            checkpoint.clean_stale_temps(ckpt_dir)

        def save() -> None:
            rank_states = distributed.gather_objects({"rng": rng_state(), "data": stream.state_dict()}, env)
            # Built on every rank under FSDP2, whose gathering of the full model and optimizer is a collective.
            contents = checkpoint_contents(state, objective, rank_states) if env.is_main or fsdp else None
            if env.is_main:
                periodic = state.step % opts.checkpoint_every == 0
                checkpoint.write_checkpoint(opts.out_dir, contents, state.step, periodic, opts.keep_last)
            state.last_checkpoint_step = state.step

        # DDP around the objective, never the bare network (FSDP2 made the objective its root already).
        model = objective if fsdp else distributed.wrap_objective(objective, env)
        if opts.compile:
            model = torch.compile(model)
        bf16 = opts.precision == "bf16" or (opts.precision == "auto" and device.type == "cuda")
        set_tf32(opts.tf32)  # explicit for matmuls and convolutions alike: torch's defaults differ by op
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
        params = [p for p in net.parameters() if p.requires_grad]
        window = MetricWindow(device)
        window_start, window_steps = time.perf_counter(), 0
        branch_at = getattr(objective, "target_branch", None)  # which target the objective computes at a step
        branch = branch_at(state.step) if branch_at else None
        with (MetricsLog(state.out_dir / "metrics.jsonl", state.step, enabled=env.is_main) as log,
              opened(trackers, opts.loggers, opts.out_dir, resume_step=state.step, enabled=env.is_main,
                     config={"train": opts.to_dict()}) as trackers,
              TrainProgress(opts.steps, state.step, quiet=opts.quiet or not env.is_main) as progress,
              interrupt.stop_at_step_boundary(enabled=env.world_size == 1) as stop):
            while state.step < opts.steps:
                k = state.step
                if branch_at and branch_at(k) != branch:
                    branch = branch_at(k)
                    progress.note(f"step {k}: the objective switches to the {branch}")
                x, y = stream.next()
                if x.shape[0] != local_batch:
                    raise ValueError(f"the data stream yields batches of {x.shape[0]} but this rank needs batch_size"
                                     f" / world_size = {local_batch}; build the stream with that batch size.")
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lr = learning_rate(opts, k)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                # Step k's randomness depends on (seed, rank, k) only, so a resumed run redraws it exactly.
                generator = torch.Generator(device).manual_seed(mix_seed(OBJECTIVE_SEED, opts.seed, env.rank, k))
                if rounds == 1:
                    with autocast():
                        loss, metrics = model(x, y, k, generator)  # the objective computes its target in fp32
                    loss.backward()
                else:  # the same draws, in rounds of batch_per_device rows; gradients synchronised in the last
                    loss, metrics = accumulation.forward_backward(model, objective, x, y, k, generator, rounds, autocast)
                grad_norm = clip_gradients(params, opts.grad_clip)

                # One host sync per step: a non-finite step must reach neither Adam nor the EMA, on any rank.
                if distributed.all_ok(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm), env):
                    optimizer.step()
                    with distributed.gathered_parameters(objective) if fsdp and emas else contextlib.nullcontext():
                        for ema in emas:  # under FSDP2 from the gathered full weights (one all-gather per unit)
                            ema.update(net, k + 1)
                    state.nonfinite_in_a_row = 0
                    window.add({**metrics, "grad_norm": grad_norm})
                else:
                    state.nonfinite_in_a_row += 1
                    state.skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                state.step = k + 1
                window_steps += 1
                progress.advance(state.step)

                if state.nonfinite_in_a_row >= opts.max_nonfinite:
                    raise TrainingDiverged(diverged_message(state, ckpt_dir))

                if state.step % opts.log_every == 0 or state.step == opts.steps:
                    now = time.perf_counter()
                    state.wall_time += now - window_start
                    state.metrics = {"step": state.step, "images_seen": state.images_seen, **window.means(env),
                                     "lr": lr, "steps_per_s": window_steps / max(now - window_start, 1e-9),
                                     "wall_time": state.wall_time, "skipped_steps": state.skipped_steps}
                    log.write(state.metrics)
                    trackers.log_metrics(state.metrics, state.step, prefix="train/")  # after the record is safe
                    progress.report(state.step, state.metrics, final=state.step == opts.steps)
                    window_start, window_steps = now, 0

                # No checkpoint inside a non-finite streak: latest.pt stays the last good state.
                if state.step % opts.checkpoint_every == 0 and state.nonfinite_in_a_row == 0:
                    save()
                if state.step % opts.sample_every == 0 and state.step < opts.steps:
                    for hook in hooks:
                        hook(state.step, state)
                if stop.requested:  # Ctrl-C / SIGTERM: this step is done; keep it, then stop
                    if state.last_checkpoint_step != state.step:
                        save()
                    raise interrupt.TrainingInterrupted(
                        f"{stop.requested} at step {state.step}: the run stopped after writing {ckpt_dir / checkpoint.LATEST}; "
                        f"run the same command again to resume from there.")

            if state.last_checkpoint_step != state.step:
                save()
            for hook in hooks:
                hook(state.step, state)
        if fsdp:  # a plain network with the final weights: the sharded one dies with the process group
            state.net = distributed.unsharded_copy(net, shell, device)
        del model  # drop the DDP reducer before the process group goes
    return state


def diverged_message(state: TrainState, ckpt_dir) -> str:
    """The one sentence TrainingDiverged carries (the CLI prints it and exits non-zero)."""
    where = (f"{ckpt_dir / checkpoint.LATEST} (step {state.last_checkpoint_step})"
             if state.last_checkpoint_step is not None else "not written yet (no checkpoint step was reached)")
    return (f"Training stopped at step {state.step}: the loss or gradient was non-finite for "
            f"{state.nonfinite_in_a_row} steps in a row, so those steps were skipped and the last good "
            f"checkpoint, {where}, is intact; lower lr or raise grad_clip and rerun to resume from it.")
