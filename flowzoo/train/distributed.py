"""torchrun support: process group, device, the DDP-wrapped objective and small collectives.

Under torchrun (env RANK / WORLD_SIZE / LOCAL_RANK) the process group is initialised with nccl on
CUDA and gloo on CPU; without those variables everything here is a no-op on a world of one.

DDP wraps the *objective module* (DESIGN.md §4): its forward draws z_t, computes the stop-gradient
target (JVP included) and calls the network, so DDP's forward is the one that runs the network whose
parameters it synchronises. The target is computed under no_grad (forward-mode JVP with dual tensors,
or autograd.grad with respect to the inputs only), which never reaches the parameters' gradient
accumulators, so DDP's reducer hooks fire exactly once per parameter per step, from the loss.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def setup(device: str = "auto") -> DistEnv:
    """Join the torchrun world if there is one (or reuse an initialised group) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    elif world_size > 1:
        rank = int(os.environ["RANK"])
        dev = resolve_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
        owns = True
    else:
        rank = 0
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistEnv(rank, local_rank, world_size, dev, owns)


def wrap_objective(objective: nn.Module, env: DistEnv) -> nn.Module:
    """DDP around the objective (never the bare network) on a world of more than one; else unchanged."""
    if not env.distributed:
        return objective
    return nn.parallel.DistributedDataParallel(
        objective,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        # Backbones keep no running statistics; their only buffers are fixed functions of the shape,
        # so broadcasting them before every forward would be pure communication.
        broadcast_buffers=False,
    )


def all_ok(ok: torch.Tensor, env: DistEnv) -> bool:
    """True when the flag is true on every rank (so all ranks skip or take a step together)."""
    flag = ok.to(torch.int32).reshape(1)
    if env.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def mean_over_ranks(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def gather_objects(obj, env: DistEnv) -> list:
    """One object per rank, in rank order (small python state: RNG and data positions)."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def teardown(env: DistEnv, clean: bool = True) -> None:
    """Destroy the process group we created; after a barrier when every rank ends normally."""
    if env.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistEnv]:
    """``setup`` on entry; on exit the process group is destroyed (after a barrier only on a clean exit:
    a rank that raised must not leave the others waiting in a barrier it never reaches)."""
    env = setup(device)
    try:
        yield env
    except BaseException:
        teardown(env, clean=False)
        raise
    teardown(env, clean=True)
