"""`flowzoo analyze gradients`: the alpha-Flow paper's diagnosis of MeanFlow, along a training run.

The paper splits the MeanFlow loss into trajectory flow matching and trajectory consistency
(objectives/target.py `loss_decomposition`):
    L_TFM = ||u_theta(z_t, r, t) - v||^2           L_TC = 2 (t - r) <u_theta, sg(du/dt)>    (alpha = 0)
and reports that their gradients conflict (cosine strongly negative), while plain flow matching on
r = t samples, L_FM' = ||u_theta(z_t, t, t) - v||^2, conflicts with L_TC much less, which is why
MeanFlow needs its large fraction of r = t samples and why alpha-Flow starts from flow matching.

Every `every` steps of a training run this measures, on one fixed analysis batch (same data, noise and
times each time, so the curve shows the network changing, not the batch):
    cos(grad L_TFM, grad L_TC), cos(grad L_FM', grad L_TC), cos(grad L_TFM, grad L_FM')
over all parameters, each loss the plain per-sample mean ("") and weighted as the training loss
weights its samples ("_w"); beside them the gradient norm of each part (r < t pairs, r = t samples),
the adaptive weight's range per part, the JVP term's size relative to v, and the squared error per
t-bucket (`health`), which is what a run that collapses at 1 NFE needs to show where it goes wrong. For alpha > 0 (alpha-Flow mid-curriculum) L_TC is its two-point form
(1 - alpha)/alpha ||u - u(z_s, r, s)||^2 at the schedule's current alpha.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowzoo.jsonl import append_line, read_by_step
from flowzoo.objectives.unified import DrawnBatch

KEYS = ("cos_tfm_tc", "cos_fm_tc", "cos_tfm_fm")


@dataclass
class AnalysisBatch:
    x: Tensor
    pairs: DrawnBatch  # r < t everywhere: the samples L_TFM and L_TC live on
    fm: DrawnBatch  # the same x, noise and t with r = t: the samples of L_FM'


def analysis_batch(objective, dataset, size: int, seed: int) -> AnalysisBatch:
    """A fixed batch: data, noise and (r, t) from the objective's own time sampler, labels kept."""
    stream = dataset.stream(size, seed=seed + 7919)  # its own stream: not the training order
    x, y = next(iter(stream))
    generator = torch.Generator().manual_seed(seed + 104729)
    e = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    t, r = objective.time_sampler(size, generator=generator, device=x.device)
    t, r = t.to(x.dtype), r.to(x.dtype)
    keep = r < t  # continuous samplers give r = t with probability 0; discrete ones may not
    x, y, e, t, r = x[keep], y[keep], e[keep], t[keep], r[keep]
    labels = y if objective.null_label > 0 else None
    dropped = torch.zeros(len(x), dtype=torch.bool)
    return AnalysisBatch(x, DrawnBatch(e, t, r, labels, dropped), DrawnBatch(e, t, t.clone(), labels, dropped))


def _flat_grad(loss: Tensor, params: list[Tensor]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def gradient_cosines(objective, batch: AnalysisBatch, step: int) -> dict[str, float]:
    """The three cosines, plain and loss-weighted, of the objective's network at training step `step`."""
    params = [p for p in objective.net.parameters() if p.requires_grad]
    device = params[0].device
    x = batch.x.to(device)
    _, pair_terms = objective.loss_terms(x, _to(batch.pairs, device), step)
    l_tfm, l_tc = pair_terms.decomposition()
    _, fm_terms = objective.loss_terms(x, _to(batch.fm, device), step)
    l_fm = fm_terms.sq_err  # r = t: alpha = 1, the target is v~ (= v for data shift): plain flow matching
    out = {"alpha": float(pair_terms.alpha.mean()), "L_TFM": float(l_tfm.detach().mean()),
           "L_TC": float(l_tc.detach().mean()), "L_FM": float(l_fm.detach().mean()),
           **health(pair_terms, fm_terms)}
    for suffix, w_pair, w_fm in (("", None, None), ("_w", pair_terms.weight, fm_terms.weight)):
        def reduce(values: Tensor, weight: Tensor | None) -> Tensor:
            return values.mean() if weight is None else (weight * values).mean()

        g_tfm = _flat_grad(reduce(l_tfm, w_pair), params)
        g_tc = _flat_grad(reduce(l_tc, w_pair), params)
        g_fm = _flat_grad(reduce(l_fm, w_fm), params)
        out[f"cos_tfm_tc{suffix}"] = _cos(g_tfm, g_tc)
        out[f"cos_fm_tc{suffix}"] = _cos(g_fm, g_tc)
        out[f"cos_tfm_fm{suffix}"] = _cos(g_tfm, g_fm)
        # The gradient norms of the two parts of the training loss (r < t: L_TFM + L_TC, r = t: L_FM').
        out[f"gradnorm_pairs{suffix}"] = float((g_tfm + g_tc).norm())
        out[f"gradnorm_fm{suffix}"] = float(g_fm.norm())
    return out


T_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)


def health(pair_terms, fm_terms) -> dict[str, float]:
    """What a collapsing run shows first, on the analysis batch: the adaptive weight's range on each
    part, the size of the JVP term (t - r) du/dt relative to v (MeanFlow's target v - (t - r) du/dt), and
    the unweighted squared error per t-bucket on the r < t pairs."""
    with torch.no_grad():
        out: dict[str, float] = {}
        for name, terms in (("pairs", pair_terms), ("fm", fm_terms)):
            w = terms.weight.detach().double()
            out[f"weight_min_{name}"], out[f"weight_max_{name}"] = float(w.min()), float(w.max())
        tr = (pair_terms.t - pair_terms.r).double().view(-1, *([1] * (pair_terms.v_shift.dim() - 1)))
        jvp_term = (tr * pair_terms.target.du_dt.double()).flatten(1).norm(dim=1)
        v_norm = pair_terms.v_shift.double().flatten(1).norm(dim=1).clamp_min(1e-12)
        out["jvp_term_rel"] = float((jvp_term / v_norm).mean())  # 0 where no sample takes the JVP
        sq, t = pair_terms.sq_err.detach().double(), pair_terms.t.double()
        for lo, hi in zip(T_BUCKETS[:-1], T_BUCKETS[1:]):
            inside = (t >= lo) & ((t < hi) if hi < 1 else (t <= hi))
            out[f"sq_err_t{lo:.2f}-{hi:.2f}"] = float(sq[inside].mean()) if bool(inside.any()) else float("nan")
        return out


def _to(drawn: DrawnBatch, device) -> DrawnBatch:
    move = lambda v: v.to(device) if isinstance(v, Tensor) else v  # noqa: E731
    return DrawnBatch(*(move(getattr(drawn, f)) for f in ("noise", "t", "r", "labels", "dropped")))


class GradientHook:
    """A training hook: one JSON line of cosines per call (the loop calls it every sample_every steps)."""

    def __init__(self, objective, batch: AnalysisBatch, path: Path):
        self.objective, self.batch, self.path = objective, batch, Path(path)

    def __call__(self, step: int, state) -> None:
        if not state.is_main:
            return
        line = {"step": step, "images_seen": state.images_seen, **gradient_cosines(self.objective, self.batch, step)}
        append_line(self.path, line)


def plot_cosines(lines: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowzoo.atomic import atomic_write

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    steps = [line["step"] for line in lines]
    labels = {"cos_tfm_tc": "cos(∇L_TFM, ∇L_TC)", "cos_fm_tc": "cos(∇L_FM', ∇L_TC)", "cos_tfm_fm": "cos(∇L_TFM, ∇L_FM')"}
    for key, label in labels.items():
        line, = ax.plot(steps, [entry[key] for entry in lines], label=label)
        ax.plot(steps, [entry[key + "_w"] for entry in lines], ls="--", color=line.get_color(), alpha=0.6)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("training step")
    ax.set_ylabel("cosine similarity (dashed: loss-weighted)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def analyze_gradients(cfg: dict[str, Any], *, every: int, batch_size: int, quiet: bool = False) -> tuple[Path, list[dict]]:
    """Train the resolved config, measuring the cosines every `every` steps; returns (out dir, lines)."""
    from flowzoo import yaml_io
    from flowzoo.atomic import atomic_write_text
    from flowzoo.config import ConfigError, build_dataclass
    from flowzoo.data import dataset_from_config, parse_data_name
    from flowzoo.objectives import create_objective
    from flowzoo.pipeline.run import build_network, check_out_folder, check_run_dir
    from flowzoo.train import TrainOptions, train

    cfg = dict(cfg)
    cfg["data"] = {**cfg["data"], "name": parse_data_name(cfg["data"]["name"])}
    out, seed = Path(cfg["out"]), int(cfg["seed"])
    check_out_folder(out)
    cfg["train"] = {**cfg.get("train", {}), "sample_every": int(every)}
    cfg["analysis"] = {"every": int(every), "batch_size": int(batch_size)}
    dataset = dataset_from_config(cfg["data"])
    options = build_dataclass(TrainOptions, {**cfg["train"], "out_dir": str(out), "seed": seed, "quiet": quiet}, "train")
    spec = dict(cfg["objective"])
    net = build_network(cfg["backbone"], dataset, seed)
    objective = create_objective(spec.pop("name"), net, total_steps=options.steps, **spec)
    batch = analysis_batch(objective, dataset, batch_size, seed)  # before the folder is touched: it may refuse
    if len(batch.x) == 0:
        raise ConfigError(f"objective '{cfg['objective']['name']}' drew no time pairs with r < t in a batch of "
                          f"{batch_size}, and L_TC lives there: it trains on r = t only; analyse a two-time objective "
                          f"such as meanflow or alphaflow.")
    check_run_dir(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml_io.dump(cfg, sort_keys=False))
    hook = GradientHook(objective, batch, out / "gradients.jsonl")
    if not (out / "gradients.jsonl").exists():
        hook(0, _Start(net))  # the initial network: step 0
    train(options, net, objective, dataset, hooks=[hook])
    lines = read_by_step(out / "gradients.jsonl")
    name = cfg["objective"]["name"]
    plot_cosines(lines, out / "gradients.png", f"{name} on {cfg['data']['name']}: gradient cosines along training")
    return out, lines


class _Start:
    """What a hook needs at step 0, before the training loop has a state."""

    is_main = True
    images_seen = 0

    def __init__(self, net):
        self.net = net


def summary_rows(lines: list[dict[str, Any]], parts: int = 4) -> list[list[str]]:
    """Mean cosines over the quarters of the run (then over all of it), as table rows of strings."""
    if not lines:
        return []
    chunk = max(1, -(-len(lines) // parts))
    spans = [lines[i:i + chunk] for i in range(0, len(lines), chunk)] + [lines]
    rows = []
    for span in spans:
        mean = lambda key: sum(entry[key] for entry in span) / len(span)  # noqa: E731
        label = f"{span[0]['step']}-{span[-1]['step']}"
        rows.append([label if span is not lines else f"all ({label})"] + [
            f"{mean(k):+.3f}" for k in ("cos_tfm_tc", "cos_fm_tc", "cos_tfm_fm", "cos_tfm_tc_w", "cos_fm_tc_w")])
    return rows
