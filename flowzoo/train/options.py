"""Every knob of the training loop in one dataclass (EDM2 style: one line, one comment).

Durations are counted in optimizer steps; ``images_seen = step * batch_size`` (the global batch) is
tracked and logged alongside. Defaults are the published ImageNet-256 recipe (reference/recipes.yaml).

Gradient accumulation (EDM2's ``batch_gpu``): ``batch_per_device`` = n runs each rank's share of a step,
batch_size / world_size samples, as (batch_size / world_size) / n forward/backward rounds of n samples,
with one gradient synchronisation and one optimizer step at the end; the step's draws (noise, t, r, the
fm_ratio split, label drops) are those of the whole per-rank batch, so the step equals the step without
accumulation (to float round-off; flowzoo/train/accumulation.py). E.g. the recipe's global batch 256 on
8 GPUs that fit 16 samples each: 32 per rank, batch_per_device 16, two rounds per step. None (the default)
is one round of the whole per-rank batch. A run may resume with another value (e.g. on other GPUs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")
PARALLEL = ("ddp", "fsdp")


@dataclass
class TrainOptions:
    out_dir: str = "runs/default"  # checkpoints/, metrics.jsonl and hook outputs go here; rerun to resume
    steps: int = 400_000  # total optimizer steps (including skipped non-finite ones)
    batch_size: int = 256  # GLOBAL batch; each of the world's ranks gets batch_size / world_size
    batch_per_device: int | None = None  # samples per forward/backward round per rank (gradient accumulation); None = one round
    seed: int = 0  # seeds the data stream and every step's objective generator (with rank and step)
    lr: float = 1e-4  # Adam learning rate after warm-up
    betas: tuple[float, float] = (0.9, 0.95)  # Adam betas (recipe)
    eps: float = 1e-8  # Adam epsilon
    weight_decay: float = 0.0  # Adam (L2, not decoupled) weight decay; the recipe uses none
    warmup_steps: int = 10_000  # linear LR warm-up from lr/warmup_steps to lr, then constant (0 = none)
    lr_cooldown_frac: float = 0.0  # the last fraction of the run over which the LR falls linearly to 0 (0 = constant, the recipe)
    grad_clip: float | None = 16.0  # clip the global gradient norm to this; None = no clipping
    ema_halflives: list[float] = field(default_factory=lambda: [6931.0])  # one EMA per halflife, in steps
    ema_rampup_ratio: float | None = 0.05  # effective halflife = min(halflife, ratio * step); None = off
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16 (autocast)
    tf32: bool = False  # TF32 for fp32 matmuls and cuDNN convolutions alike (never inside an fp32 target); flowzoo/precision.py
    compile: bool = False  # torch.compile the (DDP-wrapped) objective module
    parallel: str = "ddp"  # under torchrun: ddp (DDP around the objective) | fsdp (FSDP2 shards of the network's blocks; train/distributed.py)
    checkpoint_every: int = 5_000  # write checkpoints/latest.pt and step-XXXXXXXX.pt every this many steps
    keep_last: int = 3  # periodic step-XXXXXXXX.pt checkpoints kept besides latest.pt (0 = none)
    log_every: int = 100  # append one line to metrics.jsonl (and refresh the progress bar) every this many steps
    sample_every: int = 10_000  # call the hooks every this many steps (and once at the end)
    max_nonfinite: int = 10  # stop with TrainingDiverged after this many non-finite steps in a row
    device: str = "auto"  # auto: cuda:LOCAL_RANK when available, else cpu; or an explicit torch device
    quiet: bool = False  # no progress bar and no plain progress lines (metrics.jsonl is still written)
    loggers: list[Any] | str = field(default_factory=list)  # trackers besides metrics.jsonl, rank 0 only: tensorboard, wandb, a plugin's (flowzoo/loggers/)

    def __post_init__(self) -> None:
        self.out_dir = str(self.out_dir)  # a Path would not load with weights_only=True
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.ema_halflives = [float(h) for h in self.ema_halflives]
        self.loggers = [self.loggers] if isinstance(self.loggers, (str, dict)) else list(self.loggers)
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be >= 0 (got {self.steps})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        elif self.batch_per_device is not None and (self.batch_per_device < 1 or self.batch_size % self.batch_per_device):
            problems.append(f"batch_per_device must be a positive divisor of the per-rank batch, batch_size / world_size, "
                            f"or null (got {self.batch_per_device} with batch_size {self.batch_size})")
        for name in ("checkpoint_every", "log_every", "sample_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 <= self.lr_cooldown_frac <= 1.0:
            problems.append(f"lr_cooldown_frac must lie in [0, 1] (got {self.lr_cooldown_frac})")
        if self.keep_last < 0 or self.warmup_steps < 0:
            problems.append("keep_last and warmup_steps must be >= 0")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.parallel not in PARALLEL:
            problems.append(f"parallel must be one of {', '.join(PARALLEL)} (got {self.parallel!r})")
        if any(h <= 0 for h in self.ema_halflives):
            problems.append(f"every EMA halflife must be > 0 steps (got {self.ema_halflives})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"grad_clip must be > 0 or None (got {self.grad_clip})")
        if problems:
            raise ValueError("invalid training options: " + "; ".join(problems) + ".")

    def per_rank(self, world_size: int) -> tuple[int, int]:
        """(samples per rank per step, forward/backward rounds per step) on a world of ``world_size``;
        a batch_size or batch_per_device that does not split evenly is refused in one sentence."""
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the {world_size} processes; "
                             f"pick a multiple of {world_size}.")
        local = self.batch_size // world_size
        per_round = local if self.batch_per_device is None else self.batch_per_device
        if local % per_round:
            divisors = [d for d in range(1, local + 1) if local % d == 0]
            raise ValueError(f"train.batch_per_device {per_round} does not divide the per-rank batch {local} "
                             f"(batch_size {self.batch_size} over {world_size} processes); pick one of "
                             f"{', '.join(map(str, divisors))}, or null for one round per step.")
        return local, local // per_round

    @property
    def total_images(self) -> int:
        return self.steps * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain python values only (lists, not tuples), so a checkpoint loads with weights_only=True."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}.")
        return cls(**d)

    def replace(self, **overrides: Any) -> "TrainOptions":
        return TrainOptions.from_dict({**self.to_dict(), **overrides})
