"""torchrun support: process group, device, the DDP-wrapped or FSDP2-sharded objective and small collectives.

Under torchrun (env RANK / WORLD_SIZE / LOCAL_RANK) the process group is initialised with nccl on
CUDA and gloo on CPU; without those variables everything here is a no-op on a world of one.

DDP (``train.parallel=ddp``, the default) wraps the *objective module* (DESIGN.md §4): its forward draws
z_t, computes the stop-gradient target (JVP included) and calls the network, so DDP's forward is the one
that runs the network whose parameters it synchronises. The target is computed under no_grad
(forward-mode JVP with dual tensors, or autograd.grad with respect to the inputs only), which never
reaches the parameters' gradient accumulators, so DDP's reducer hooks fire exactly once per parameter
per step, from the loss.

FSDP2 (``train.parallel=fsdp``; torch.distributed.fsdp.fully_shard), on a world of more than one:

- What is sharded: every child of every outermost ``nn.ModuleList`` inside the network that holds
  parameters is one unit (the DiT / video-DiT / residual-MLP blocks: the repeated blocks, which hold
  almost all parameters), and the objective module is the root unit, holding the rest (embedders, final
  layer), as DDP wraps the objective. Parameters, gradients and Adam's moments are dim-0 shards (DTensors);
  no MixedPrecisionPolicy: master weights, gradients and their reduction stay fp32, bf16 comes from
  autocast as under DDP, so the numbers match DDP's to float round-off.
- Why the units keep their gathered parameters from their first call in a step's forward until their
  own backward (``reshard_after_forward=False``, ZeRO-2 style for parameters): the objective calls the
  network a data-dependent number of times per rank (the two-point and JVP targets run only where this
  rank's share of the batch has such samples, a model shift velocity only where it is asked for). FSDP2
  all-gathers a unit at every call after a reshard, and by default prefetches in backward along the
  recorded order of *all* calls, so ranks would wait on different collectives and hang. With the
  parameters kept gathered, every rank makes one all-gather per unit per step, in block order, and one
  reduce-scatter per unit in backward; backward prefetching is pointed at the root (always gathered, so
  a no-op), which switches off the call-order-driven implicit prefetch.
- The target: forward-mode JVP (``jvp: forward``, dual tensors, and ``functorch``), the finite
  difference and the two-point / shift no_grad calls run through FSDP2's hooks unchanged (tested on gloo
  CPU: gradients equal DDP's). ``jvp: double_backward`` is refused: its backward passes inside the target
  run FSDP2's gradient hooks mid-forward, which reshard the units (measured: "The tensor has a non-zero
  number of elements, but its data is not allocated yet", then a hang). ``train.compile`` with fsdp is
  refused too (untested). Both refusals are one sentence, also on a world of one, so a config that works
  on one process does not fail later under torchrun.
- The EMA stays a full, unsharded copy on every rank (made before sharding, never a submodule), updated
  every step from the gathered parameters (``gathered_parameters``: one all-gather per unit per step), so
  it is bit for bit the EMA of a DDP run; it is also what a target_network "ema" objective and the
  sampling hooks call, without collectives.
- Checkpoints: the same file as under DDP, written by rank 0 atomically. The model and the optimizer are
  gathered on every rank (collectives) into full state dicts on rank 0's CPU
  (torch.distributed.checkpoint.state_dict, full_state_dict=True, cpu_offload=True), and the optimizer's
  state is keyed by parameter index as ``Optimizer.state_dict()`` keys it, so `flowzoo sample` / `eval`
  load it on one process (tested: tests/test_train_fsdp.py).
- Resume: every rank reads the full checkpoint and keeps its own shard (set_model_state_dict /
  set_optimizer_state_dict with full state dicts): a resumed run ends with the parameters of the
  uninterrupted one, bit for bit on CPU.
- After ``train()`` returns, ``state.net`` is a plain (unsharded) copy with the final weights; the module
  passed in as ``net`` stays sharded over a process group that no longer exists. Hooks called during
  training get the sharded network in ``state.net``: sample from ``state.ema_net``, or call ``state.net``
  on every rank.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

try:  # DTensor is what FSDP2 makes of parameters, gradients and optimizer states
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch built without distributed support: nothing is ever sharded
    DTensor = ()  # type: ignore[assignment,misc]


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


def launched_world_size() -> int:
    """The number of processes torchrun launched (WORLD_SIZE; 1 without it), readable before ``setup``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


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


def check_parallel(parallel: str, objective: nn.Module, compile: bool = False) -> None:
    """Refuse, in one sentence, what ``train.parallel=fsdp`` cannot run (see the module docstring)."""
    if parallel != "fsdp":
        return
    jvp = getattr(getattr(objective, "config", None), "jvp", None)
    if (jvp.get("name") if isinstance(jvp, dict) else jvp) == "double_backward":
        raise ValueError("train.parallel=fsdp cannot take objective.jvp=double_backward, whose backward passes inside "
                         "the target would run FSDP2's gradient hooks mid-forward; use jvp forward (the default), "
                         "functorch or finite_difference, or train.parallel=ddp.")
    if compile:
        raise ValueError("train.parallel=fsdp cannot be combined with train.compile=true yet (compiling through "
                         "FSDP2's hooks is untested in flowzoo); set train.compile=false or use train.parallel=ddp.")


def shard_units(net: nn.Module) -> list[nn.Module]:
    """FSDP2's units inside ``net``: every child of every outermost nn.ModuleList that holds parameters.

    Backbones keep their repeated blocks in a ModuleList (DiT.blocks, VideoDiT.blocks, ResidualMLP.blocks),
    and those hold almost all the parameters; a list inside a unit is not split further. A network without
    a ModuleList has no units of its own: the root (the objective) then holds all of it.
    """
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                units.extend(block for block in child if next(block.parameters(), None) is not None)
            else:
                visit(child)

    visit(net)
    return units


def shard_objective(objective: nn.Module, net: nn.Module, env: DistEnv) -> bool:
    """FSDP2 in place: fully_shard each unit of ``net`` (``shard_units``), then the objective as the root.

    Returns whether anything was sharded (not on a world of one). Build the optimizer afterwards: sharding
    replaces the parameters with DTensor shards.
    """
    if not env.distributed:
        return False
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    units = shard_units(net)
    for unit in units:
        # Gathered from the first call of a step until the unit's backward: see the module docstring.
        fully_shard(unit, mesh=mesh, reshard_after_forward=False)
    fully_shard(objective, mesh=mesh)  # the root keeps its parameters gathered through backward anyway
    for module in (*units, objective):
        # Explicit prefetch of the always-gathered root (a no-op) instead of FSDP2's implicit prefetch along
        # the order of all calls, which differs between ranks when their numbers of target calls differ.
        module.set_modules_to_backward_prefetch([objective])
    return True


def is_sharded(module: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def replicated(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of the full value (a DTensor, e.g. the norm of sharded gradients, is gathered)."""
    return value.full_tensor() if isinstance(value, DTensor) else value


@contextlib.contextmanager
def gathered_parameters(module: nn.Module) -> Iterator[None]:
    """Inside, the FSDP2 units under ``module`` hold their full parameters (for reading, e.g. the EMA
    update); a collective, so every rank enters it. Without FSDP2 units it does nothing."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


_FULL_ON_RANK0 = dict(full_state_dict=True, cpu_offload=True)


def model_state(net: nn.Module) -> dict[str, Any]:
    """``net.state_dict()``; of a sharded network the gathered full one, on rank 0 only (a collective:
    every rank calls it; the other ranks get an empty dict)."""
    if not is_sharded(net):
        return net.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(net, options=StateDictOptions(**_FULL_ON_RANK0))


def load_model_state(net: nn.Module, state: dict[str, Any]) -> None:
    """``net.load_state_dict(state)`` for a full state dict; a sharded network keeps this rank's shards."""
    if not is_sharded(net):
        net.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(net, state, options=StateDictOptions(full_state_dict=True))


def _parameter_names(net: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in the order Optimizer.state_dict() numbers them."""
    names = {id(p): name for name, p in net.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()``; for a sharded network the gathered full one on rank 0 (empty elsewhere),
    keyed by parameter index like Optimizer.state_dict(), so the file is the one a DDP run writes."""
    if not is_sharded(net) or not optimizer.state:  # no state yet: nothing sharded to gather
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(net, optimizer, options=StateDictOptions(**_FULL_ON_RANK0))
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_parameter_names(net, optimizer))}
    return {"state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in full["param_groups"]]}


def load_optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` for a full, index-keyed state dict; sharded: this rank's shards."""
    if not is_sharded(net) or not state["state"]:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = _parameter_names(net, optimizer)
    by_name = {"state": {names[int(i)]: value for i, value in state["state"].items()},
               "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(net, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def meta_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net``'s structure without storage (taken before sharding, filled by ``unsharded_copy``)."""
    return copy.deepcopy(net).to("meta")


def unsharded_copy(net: nn.Module, shell: nn.Module, device: torch.device) -> nn.Module:
    """``shell`` (a ``meta_copy``) holding the full weights and buffers of the sharded ``net`` on ``device``;
    a collective (every rank gathers the full state)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True))
    plain = shell.to_empty(device=device)
    plain.load_state_dict(full)
    with torch.no_grad():  # non-persistent buffers (e.g. DiT's pos_embed) are not in the state dict
        buffers = dict(net.named_buffers())
        for name, buffer in plain.named_buffers():
            buffer.copy_(buffers[name])
    return plain.train(net.training)


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


def gather_to_main(obj, env: DistEnv) -> list | None:
    """One object per rank in rank order on rank 0 (None elsewhere): evaluation summaries, so only rank 0
    holds every rank's features."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
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
