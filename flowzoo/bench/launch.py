"""How a suite's cells are launched: a plain `flowzoo run`, or `flowzoo run` under torchrun.

`flowzoo bench SUITE --nproc-per-node N [--nnodes M --node-rank R --master-addr HOST --master-port P]`
runs every cell as ``torchrun ... -m flowzoo run ...``. The global batch (train.batch_size) is split over
the N x M ranks by the training loop, so the config, its hash and the record are the same however many
GPUs a cell ran on; only the wall time and the GPU-hours differ.

Several nodes: start the same `flowzoo bench` command on every node (each with its own --node-rank) with
the run and results folders on a file system all nodes share. Every node walks the grid in the same order
and launches the same cells, torchrun's static rendezvous (node 0 at --master-addr) joins them, and only
node 0, which holds global rank 0 and so writes result.json, writes the records.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

from flowzoo.config import ConfigError


@dataclass(frozen=True)
class Launch:
    nproc_per_node: int | None = None  # None: a plain `flowzoo run` (one process)
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self):
        if self.nproc_per_node is not None and self.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be at least 1 (got {self.nproc_per_node}).")
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank must lie in 0..{self.nnodes - 1} for --nnodes {self.nnodes} (got {self.node_rank}).")
        if self.nnodes > 1 and self.nproc_per_node is None:
            raise ConfigError("--nnodes needs --nproc-per-node (the processes torchrun starts on each node).")
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError("--nnodes above 1 needs --master-addr, the address of node 0 that every node can reach.")

    @property
    def torchrun(self) -> bool:
        return self.nproc_per_node is not None

    @property
    def world_size(self) -> int:
        return (self.nproc_per_node or 1) * self.nnodes

    @property
    def writes_records(self) -> bool:
        """Node 0 holds global rank 0, the rank that writes result.json; the other nodes only train."""
        return self.node_rank == 0

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:  # --standalone: a free local port, so cells run side by side (--jobs) do not collide
            return ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return [f"--nproc-per-node={self.nproc_per_node}", f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                f"--master-addr={self.master_addr}", f"--master-port={self.master_port}"]

    def shown(self, run_args: list[str]) -> str:
        """The command a user types (and a record carries) for one cell."""
        prefix = ["torchrun", *self.torchrun_args(), "-m", "flowzoo"] if self.torchrun else ["flowzoo"]
        return shlex.join([*prefix, "run", *run_args])

    def argv(self, run_args: list[str]) -> list[str]:
        """The same command for a subprocess: this interpreter, torchrun as torch.distributed.run."""
        if self.torchrun:
            return [sys.executable, "-m", "torch.distributed.run", *self.torchrun_args(), "-m", "flowzoo", "run", *run_args]
        return [sys.executable, "-m", "flowzoo.cli", "run", *run_args]
