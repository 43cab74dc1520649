"""The unified alpha-Flow objective as a module (DESIGN.md §2); every preset is a configuration of it.

One training step, for a batch of data x with labels y:
  1. e ~ N(0, I); (t, r) from the time sampler; r = t on a fraction fm_ratio of the batch;
     z_t = (1 - t) x + t e, v = e - x; labels dropped to null with probability label_dropout.
  2. alpha from the schedule (per step or per sample). Flow-matching samples (r = t) use alpha = 1:
     their two-point target alpha v~ + (1 - alpha) u-(z_t, t, t) under 1/alpha weighting has exactly
     the gradient of ||u - v~||^2, so the network call it would cost is skipped (tested).
  3. v~ from the shift velocity; u_tgt = alpha_target(...) under stop-gradient, in fp32, or with its
     network calls under bf16 autocast and everything else in fp32 (target_precision; by default the
     target follows the training step: bf16 when the step runs under bf16 autocast, docs/precision.md).
  4. loss = mean_b w_b ||u(z_t, r, t) - u_tgt||^2 (per-sample mean over elements), w from the weighting;
     with directional_loss > 0 a per-sample cosine term joins the error before weighting (TiM).

DistributedDataParallel wraps this module (it owns the network), so the JVP and the target calls
live inside the wrapped forward and gradients always synchronise (DESIGN.md §4).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flowzoo.config import OBJECTIVE_OPTIONS_NEUTRAL, ConfigError
from flowzoo.objectives.schedules import Schedule, build_schedule
from flowzoo.objectives.shift import ShiftContext
from flowzoo.objectives.target import (AlphaTarget, alpha_target_parts, directional_error, loss_decomposition,
                                      per_sample)
from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.objectives.time_samplers import apply_fm_ratio, choose_fm_rows, fm_count
from flowzoo.objectives.velocity import ConditionedVelocity
from flowzoo.precision import full_fp32
from flowzoo.registry import SHIFT_VELOCITIES, TIME_SAMPLERS, WEIGHTINGS


_OMITTED_AT_DEFAULT = OBJECTIVE_OPTIONS_NEUTRAL  # flowzoo/config.py: options added after records were committed
LABEL_DROPOUT_ROWS = ("all", "flow_matching")
TARGET_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class ObjectiveConfig:
    """Every knob of the unified objective. Part specs are a name or {name: ..., **arguments}."""

    time_sampler: Any = field(default_factory=lambda: {"name": "logit_normal", "mean": -0.4, "std": 1.0})
    fm_ratio: Any = 0.75  # fraction of each batch with r = t (flow-matching samples); number or schedule
    # Where the flow-matching rows take their times from: None = the time sampler's pair (its t, with r = t:
    # MeanFlow's code), or a time-sampler spec they draw from on their own (the alpha-Flow code's
    # time_sampling_fm; Shortcut's 128-point grid with the finest step, r = t - 1/128). With a spec, the
    # pair sampler draws only the other rows (see UnifiedObjective.sample_times).
    fm_times: Any = None
    alpha: Any = 0.0  # number or schedule spec, e.g. {name: sigmoid, start_frac: 0, end_frac: 1}
    shift: Any = "data"  # data | cfg (omega, kappa, t_min, t_max) | model | teacher (checkpoint) | instantaneous
    # The velocity the path is followed with (z_s's step, the JVP's tangent): "shift" = the shift velocity
    # itself (every method of the alpha-Flow paper); "instantaneous" = the model's u-(z_t, t, t) (iMF).
    tangent: Any = "shift"
    label_dropout: float = 0.1  # probability a class label is replaced by the null label
    label_dropout_on: str = "all"  # all | flow_matching (Shortcut's code never drops a bootstrap row's label)
    weighting: Any = "uniform"  # uniform | inverse_alpha | adaptive | alpha_adaptive | inverse_alpha_adaptive (c, p) | consistency
    jvp: str = "forward"  # forward | functorch | double_backward | finite_difference
    target_clamp: float | None = None  # clamp the targets of r < t samples with alpha > 0 to +-value (official: 4)
    intermediate_clamp: float | None = None  # clamp the two-point branch's point z_s to +-value (Shortcut's code: 4)
    target_network: str = "online"  # online (stop-gradient) | ema (an EMA copy set by the trainer)
    # Distillation: a teacher run's checkpoint; its velocity replaces the data velocity e - x as the
    # shift velocity (anchor and tangent) of whatever preset this is (see shift.TeacherVelocity).
    distill: str | None = None
    # The target's network calls (u-(z_s, r, s), the JVP, the shift velocity's forwards): "fp32" with
    # autocast off, or "bf16" autocast with fp32 tangent inputs, outputs cast back to fp32, and the target
    # formula and loss in fp32. "auto" (the default) is bf16 when the training step itself runs under bf16
    # autocast (train.precision bf16, or auto on CUDA) and fp32 otherwise: measured, the bf16 target moves
    # the gradient 4-14x less than bf16 autocast of the training forward already does (docs/precision.md).
    # Every committed CPU record ran fp32, which auto gives on a CPU; a finite-difference JVP stays fp32.
    target_precision: str = "auto"
    # Weight of a directional term added to each sample's squared error: the mean over positions of
    # 1 - cos(u, u_tgt), the cosine taken over the channel dim (dim 1; a flat sample is one vector).
    # It joins the error before the weighting, so an adaptive weight's denominator includes it (TiM's
    # use_dir_loss, weight 1; target.directional_error). 0 (the default) leaves the loss untouched.
    directional_loss: float = 0.0

    def replace(self, **overrides: Any) -> "ObjectiveConfig":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown objective option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The options as a mapping; options added after records were committed are left out while they
        hold their defaults, so every earlier config (and the hash its records carry) reads the same."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in _OMITTED_AT_DEFAULT and v == _OMITTED_AT_DEFAULT[k])}


class UnifiedObjective(nn.Module):
    def __init__(self, net: nn.Module, config: ObjectiveConfig, total_steps: int | None = None):
        super().__init__()
        if config.target_network not in ("online", "ema"):
            raise ValueError(f"target_network must be 'online' or 'ema', not {config.target_network!r}")
        self.net = net
        self.config = config
        self.time_sampler = TIME_SAMPLERS.build(config.time_sampler)
        self.fm_time_sampler = None if config.fm_times is None else TIME_SAMPLERS.build(config.fm_times)
        if config.label_dropout_on not in LABEL_DROPOUT_ROWS:
            raise ConfigError(f"objective.label_dropout_on must be one of {', '.join(LABEL_DROPOUT_ROWS)}, "
                              f"not {config.label_dropout_on!r}.")
        self.fm_ratio = build_schedule(config.fm_ratio, total_steps)
        self.alpha_schedule = build_schedule(config.alpha, total_steps)
        self.shift = SHIFT_VELOCITIES.build(config.shift)
        if config.distill is not None:
            if config.shift != "data":
                raise ValueError(f"objective.distill replaces the data velocity, but this objective's shift is "
                                 f"{config.shift!r}; distil a preset whose shift is 'data' (e.g. meanflow, alphaflow).")
            self.shift = SHIFT_VELOCITIES.build({"name": "teacher", "checkpoint": config.distill})
        self.tangent = None if config.tangent == "shift" else SHIFT_VELOCITIES.build(config.tangent)
        self.weighting = WEIGHTINGS.build(config.weighting)
        get_jvp_backend(config.jvp)  # fail now, not at the first alpha = 0 step
        check_target_precision(config)
        self._ema_net: nn.Module | None = None

    # The EMA copy is not a submodule: DDP must not broadcast it and optimisers must not see it.
    def set_target_network(self, ema_net: nn.Module | None) -> None:
        object.__setattr__(self, "_ema_net", ema_net)

    @property
    def target_net(self) -> nn.Module:
        if self.config.target_network == "online":
            return self.net
        if self._ema_net is None:
            raise RuntimeError("target_network is 'ema' but no EMA network was set (set_target_network)")
        return self._ema_net

    @property
    def null_label(self) -> int:
        return int(getattr(self.net, "num_classes", 0))

    def target_branch(self, step: int) -> str:
        """Which branch of alpha_target the r < t samples take at `step`, in words (the loop says when it
        changes: the JVP turning on when alpha reaches 0 changes the step's cost and the loss's scale)."""
        if type(self.alpha_schedule).per_sample is not Schedule.per_sample:
            return "two-point target with a per-sample alpha"
        alpha = self.alpha_schedule.value(step)
        if alpha >= 1:
            return "flow-matching target (alpha = 1, no network call)"
        if alpha <= 0:
            return f"MeanFlow JVP target (alpha = 0, jvp {self.config.jvp})"
        return "two-point target (0 < alpha < 1)"

    def sample_times(self, batch: int, step: int, generator, device) -> tuple[Tensor, Tensor, Tensor]:
        """(t, r, fm): the times, and which rows train as flow matching (alpha = 1 on the data velocity).

        Without fm_times the flow-matching rows are fm_ratio of the pair sampler's draws with r set to t
        (MeanFlow's code). With fm_times those rows (the same exact count, chosen at random) draw their own
        times from it and the pair sampler draws only the others, as the alpha-Flow code's
        sample_traj_params draws batch_size_fm single times and batch_size_mf pairs; a flow-matching row may
        then have r < t (Shortcut trains flow matching at its finest step, h = 1/128)."""
        if self.fm_time_sampler is None:
            t, r = self.time_sampler(batch, generator=generator, device=device)
            t, r = apply_fm_ratio(t, r, self.fm_ratio.value(step), generator=generator)
            return t, r, r == t
        ratio = self.fm_ratio.value(step)
        fm = choose_fm_rows(batch, ratio, generator=generator, device=device)
        n_fm = fm_count(batch, ratio)  # on the host: counting the mask would be a device sync per step
        t, r = torch.empty(batch, device=device), torch.empty(batch, device=device)
        if n_fm < batch:
            t[~fm], r[~fm] = self.time_sampler(batch - n_fm, generator=generator, device=device)
        if n_fm > 0:
            t[fm], r[fm] = self.fm_time_sampler(n_fm, generator=generator, device=device)
        return t, r, fm

    def drop_labels(self, y: Tensor | None, batch: int, generator, device, t: Tensor | None = None,
                    fm: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
        """Labels with a fraction label_dropout replaced by the null label, and the dropped mask.

        A shift velocity with ``droppable(t)`` (CFG) limits dropout to the samples it names: the
        official alpha-Flow code drops labels only inside the CFG interval t_min < t < t_max. With
        label_dropout_on = flow_matching only the flow-matching rows ``fm`` drop theirs (Shortcut's
        targets_shortcut.py get_targets keeps every bootstrap row's label)."""
        if y is None or self.null_label == 0:  # unconditional: every sample is already "null"
            return y, torch.ones(batch, dtype=torch.bool, device=device)
        dropped = torch.rand(batch, generator=generator, device=device) < self.config.label_dropout
        if t is not None and hasattr(self.shift, "droppable"):
            dropped = dropped & self.shift.droppable(t)
        if self.config.label_dropout_on == "flow_matching" and fm is not None:
            dropped = dropped & fm
        return torch.where(dropped, torch.full_like(y, self.null_label), y), dropped

    def draw(self, x: Tensor, y: Tensor | None, step: int, generator=None) -> DrawnBatch:
        """All the randomness of one step: noise, times, and label dropout."""
        batch, device = x.shape[0], x.device
        e = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        t, r, fm = self.sample_times(batch, step, generator, device)
        labels, dropped = self.drop_labels(y, batch, generator, device, t, fm)
        # Drawn last and only for schedules that need them, so every other preset's stream is unchanged.
        alpha_draws = torch.rand(batch, generator=generator, device=device) if self.alpha_schedule.random_draws else None
        return DrawnBatch(e, t.to(x.dtype), r.to(x.dtype), labels, dropped, alpha_draws, fm)

    def forward(self, x: Tensor, y: Tensor | None = None, step: int = 0, generator=None,
                drawn: DrawnBatch | None = None) -> tuple[Tensor, dict]:
        """The loss and metrics of one step on data x with labels y, its randomness drawn from ``generator``;
        given ``drawn``, on those draws instead (gradient accumulation draws the whole batch once and passes
        each round its rows; y and generator are then unused)."""
        return self.loss(x, self.draw(x, y, step, generator) if drawn is None else drawn, step)

    @staticmethod
    def merge_metrics(parts: list[tuple[int, dict[str, Tensor]]]) -> dict[str, Tensor]:
        """The metrics of a batch from those of its parts, (size, metrics) each (gradient accumulation's
        rounds): every metric is a mean over the samples, so their size-weighted mean, except alpha_batch, a
        mean over the r < t samples, which are size (1 - fm_ratio) of each part (r <= t always)."""
        total = sum(size for size, _ in parts)
        merged = {key: sum(m[key] * (size / total) for size, m in parts) for key in parts[0][1]}
        merged["alpha"] = parts[0][1]["alpha"]  # the schedule's value at this step, the same in every part
        counts = [torch.round(size * (1 - m["fm_ratio"])) for size, m in parts]  # on the device: no host sync
        bootstrapped = sum(counts)
        weighted = sum(m["alpha_batch"] * n for n, (_, m) in zip(counts, parts))  # a part without any reports 1
        merged["alpha_batch"] = torch.where(bootstrapped > 0, weighted / bootstrapped.clamp(min=1), 1.0)
        return merged

    def loss(self, x: Tensor, drawn: DrawnBatch, step: int) -> tuple[Tensor, dict]:
        """The loss for data x given the step's randomness (split from ``draw`` so tests and the gradient
        analysis can fix the noise and times)."""
        loss, parts = self.loss_terms(x, drawn, step)
        return loss, parts.metrics()

    def loss_terms(self, x: Tensor, drawn: DrawnBatch, step: int) -> tuple[Tensor, "LossTerms"]:
        e, t, r, labels = drawn.noise, drawn.t, drawn.r, drawn.labels
        z_t = per_sample(1 - t, x) * x + per_sample(t, x) * e
        v = e - x
        if self.alpha_schedule.random_draws:  # only random schedules take the draws (plugins keep (step, t, r))
            alpha = self.alpha_schedule.per_sample(step, t, r, drawn.alpha_draws).to(x.dtype)
        else:
            alpha = self.alpha_schedule.per_sample(step, t, r).to(x.dtype)
        fm = drawn.flow_matching_rows()
        alpha = torch.where(fm, torch.ones_like(alpha), alpha)  # flow-matching rows: alpha = 1

        # Targets in fp32 with autocast off: the JVP and the target are precision-sensitive. With
        # target_precision bf16 the network calls inside run under bf16 autocast (matmuls in bf16, fp32
        # accumulation); the elementwise target formula is not an autocast op, so it stays in fp32 as long
        # as every network output is cast back first (alpha_target_parts and the shifts do; the casts below
        # catch a plugin shift that does not). In fp32 those casts are no-ops: the numbers are unchanged.
        with target_autocast(self.config, x.device.type), torch.no_grad():
            s = alpha * r + (1 - alpha) * t
            ctx = ShiftContext(z_t, r, t, s, v, labels, drawn.dropped, self.null_label, self.target_net, fm)
            v_shift = self.shift(ctx).to(x.dtype)
            tangent = None if self.tangent is None else self.tangent(ctx).to(x.dtype)
            target = alpha_target_parts(
                ConditionedVelocity(self.target_net, labels), z_t, r, t, alpha, v_shift,
                jvp=self.config.jvp, clamp=self.config.target_clamp, tangent=tangent,
                point_clamp=self.config.intermediate_clamp, fm=fm,
            )

        pred = ConditionedVelocity(self.net, labels)(z_t, r, t)
        pred = pred.to(torch.promote_types(pred.dtype, torch.float32))  # the loss in fp32 (or fp64) under autocast
        sq_err = (pred - target.u_tgt.to(pred.dtype)).pow(2).flatten(1).mean(1)
        err = sq_err  # the per-sample error the weight multiplies (and an adaptive weight divides by)
        if self.config.directional_loss:  # skipped at 0, so every other preset's loss is untouched
            err = sq_err + self.config.directional_loss * directional_error(pred, target.u_tgt.to(pred.dtype))
        if getattr(self.weighting, "elements_aware", False):  # e.g. MeanFlow's per-sample-sum adaptive weight
            weight = self.weighting(alpha, err.detach(), t, r, elements=pred[0].numel()).detach()
        else:
            weight = self.weighting(alpha, err.detach(), t, r).detach()
        loss = (weight * err).mean()
        return loss, LossTerms(pred, v_shift, target, alpha, t, r, sq_err, weight, self.alpha_schedule.value(step), err, fm)


def check_target_precision(config: ObjectiveConfig) -> None:
    """Refuse, in one sentence, a target_precision that is not one of TARGET_PRECISIONS, or bf16 with a
    finite-difference JVP (its step, 1e-3 to 5e-3, is below bf16's round-off of ~4e-3 relative: the
    difference quotient would be mostly rounding noise)."""
    if config.target_precision not in TARGET_PRECISIONS:
        raise ConfigError(f"objective.target_precision must be one of {', '.join(TARGET_PRECISIONS)}, "
                          f"not {config.target_precision!r}.")
    jvp_name = config.jvp.get("name") if isinstance(config.jvp, dict) else config.jvp
    if config.target_precision == "bf16" and jvp_name == "finite_difference":
        raise ConfigError("objective.target_precision bf16 cannot take a finite-difference JVP (bf16 round-off "
                          "exceeds its step); use target_precision fp32 or an analytic jvp backend (forward).")


def target_precision_in_effect(config: ObjectiveConfig, device_type: str) -> str:
    """fp32 or bf16: what target_precision means for this step (auto reads the surrounding autocast)."""
    if config.target_precision != "auto":
        return config.target_precision
    jvp_name = config.jvp.get("name") if isinstance(config.jvp, dict) else config.jvp
    training_in_bf16 = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16
    return "bf16" if training_in_bf16 and jvp_name != "finite_difference" else "fp32"


@contextlib.contextmanager
def target_autocast(config: ObjectiveConfig, device_type: str):
    """The precision the target is computed in: bf16 autocast for the network calls, or full fp32 (autocast
    off and TF32 off for matmuls and convolutions, whatever train.tf32 says: flowzoo/precision.py)."""
    if target_precision_in_effect(config, device_type) == "bf16":
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            yield
        return
    with torch.autocast(device_type=device_type, enabled=False), full_fp32():
        yield


@dataclass
class DrawnBatch:
    """The random draws of one training step."""

    noise: Tensor
    t: Tensor
    r: Tensor
    labels: Tensor | None  # after label dropout
    dropped: Tensor  # bool (B,)
    alpha_draws: Tensor | None = None  # U(0, 1) per sample, for random alpha schedules (SplitMeanFlow)
    fm: Tensor | None = None  # bool (B,): rows trained as flow matching; None means the rows with r = t

    def flow_matching_rows(self) -> Tensor:
        return (self.r == self.t) if self.fm is None else self.fm

    def rows(self, rows: slice) -> "DrawnBatch":
        """The draws of the samples ``rows`` (one gradient-accumulation round's share of the batch)."""
        values = (getattr(self, f.name) for f in dataclasses.fields(self))
        return DrawnBatch(*(None if v is None else v[rows] for v in values))


@dataclass
class LossTerms:
    """What one loss evaluation produced; ``decomposition()`` keeps the graph to ``pred``."""

    pred: Tensor
    v_shift: Tensor
    target: AlphaTarget
    alpha: Tensor
    t: Tensor
    r: Tensor
    sq_err: Tensor
    weight: Tensor
    alpha_step: float
    error: Tensor | None = None  # sq_err plus the directional term: what the weight multiplies (None: sq_err)
    fm: Tensor | None = None  # bool (B,): the flow-matching rows (None: the rows with r = t)

    def decomposition(self) -> tuple[Tensor, Tensor]:
        return loss_decomposition(self.pred, self.v_shift, self.target, self.alpha, self.t, self.r)

    def metrics(self) -> dict[str, Tensor]:
        with torch.no_grad():
            l_tfm, l_tc = self.decomposition()
            fm = (self.r == self.t) if self.fm is None else self.fm
            bootstrapped = ~fm  # the flow-matching rows have alpha = 1 by construction
            alpha_batch = self.alpha[bootstrapped].mean() if bool(bootstrapped.any()) else self.alpha.new_tensor(1.0)
            return {
                "loss": (self.weight * (self.sq_err if self.error is None else self.error)).mean().detach(),
                "mse": self.sq_err.detach().mean(),
                "alpha": self.alpha.new_tensor(self.alpha_step),  # the schedule's value this step
                "alpha_batch": alpha_batch,  # mean alpha over the other rows (differs for per-sample schedules)
                "fm_ratio": fm.float().mean(),
                "L_TFM": l_tfm.mean(),
                "L_TC": l_tc.mean(),
            }
