"""How far the bf16 target (objective.target_precision = bf16) is from the fp32 one (issue 16, item 3).

For each case the same network, batch, noise and times give the target u_tgt twice, once with
target_precision fp32 (autocast off, what every committed record ran) and once with bf16 (the target's
network calls under bf16 autocast, tangents, the target formula and the loss in fp32). Printed per case:

    rel_l2    ||u_tgt(bf16) - u_tgt(fp32)|| / ||u_tgt(fp32)||  over the r < t samples
    net_rel   the same for the network's part of the target alone: du/dt (JVP) or u-(z_s, r, s) (two-point);
              u_tgt dilutes it by v~, which both precisions share
    max_abs   max |u_tgt(bf16) - u_tgt(fp32)|
    cos_grad  cosine between the loss's parameter gradients (prediction in fp32 in both)
    ref_cos   for scale: the gradient cosine that bf16 autocast of the *training forward* alone already
              costs (fp32 target in both; what precision=bf16 / auto on CUDA accepts today)
    s fp32/bf16  seconds for one loss and its gradient (on a CPU; says nothing about a GPU's bf16 speed)

Cases: (1) a digits model trained here (alphaflow preset, the digits config's MLP, --steps steps) or a
flowzoo run's --checkpoint; (2) a randomly initialised DiT-B/2 on 4x32x32 latents (adaLN-Zero layers
perturbed so the output is not identically zero). Objectives: meanflow (alpha = 0, the JVP target),
alphaflow at alpha = 0.5 (the two-point target u-(z_s, r, s)) and trajectory flow matching (alpha = 1: no
network call, so the two targets must agree exactly; a control). fm_ratio = 0: every sample is r < t and
takes the target branch measured (the presets' r = t samples have the same target in both precisions).

    OMP_NUM_THREADS=1 python benchmarks/target_precision.py            # a few minutes on one CPU thread
    python benchmarks/target_precision.py --checkpoint runs/alphaflow-digits-s0/checkpoints/latest.pt
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import Tensor, nn

from flowzoo.backbones import create_backbone
from flowzoo.objectives import create_objective

# (label, preset, overrides) measured on each network; fm_ratio 0 puts every sample on the r < t branch.
OBJECTIVES = (
    ("meanflow (alpha=0, JVP)", "meanflow", {"fm_ratio": 0.0}),
    ("alphaflow alpha=0.5", "alphaflow", {"fm_ratio": 0.0, "alpha": 0.5}),
    ("trajectory_fm (alpha=1)", "trajectory_fm", {"fm_ratio": 0.0}),
)


def train_digits_model(steps: int, seed: int) -> tuple[nn.Module, object]:
    """The digits default (configs/data/digits.yaml: residual MLP 256x4, batch 256, lr 1e-3) trained with
    the alphaflow preset (uniform pairs, as the digits config sets) for ``steps`` steps."""
    from flowzoo.config import resolve
    from flowzoo.data import create_dataset
    from flowzoo.pipeline.run import build_network
    from flowzoo.train import TrainOptions, train

    cfg = resolve(data="digits", objective="alphaflow")
    dataset = create_dataset("digits")
    net = build_network(cfg["backbone"], dataset, seed)
    spec = {k: v for k, v in cfg["objective"].items() if k != "name"}
    objective = create_objective("alphaflow", net, total_steps=steps, **spec)
    train_cfg = {**cfg["train"], "steps": steps, "warmup_steps": min(cfg["train"]["warmup_steps"], steps // 4)}
    with tempfile.TemporaryDirectory() as out:
        options = TrainOptions(out_dir=out, seed=seed, quiet=True, checkpoint_every=steps, sample_every=steps,
                               log_every=steps, **{k: v for k, v in train_cfg.items()
                                                   if k not in ("checkpoint_every", "sample_every", "log_every")})
        train(options, net, objective, dataset)
    return net, dataset


def random_dit_b2(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = create_backbone("DiT-B/2", input_size=32, in_channels=4, num_classes=1000)
    with torch.no_grad():  # adaLN-Zero: the zero-initialised layers would make u identically 0
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net


def flat_grad(loss: Tensor, net: nn.Module) -> Tensor:
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")


def measure(net: nn.Module, preset: str, overrides: dict, x: Tensor, y: Tensor, seed: int) -> dict[str, float]:
    runs = {}
    for precision in ("fp32", "bf16"):
        objective = create_objective(preset, net, label_dropout=0.0, target_precision=precision, **overrides)
        drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        loss, terms = objective.loss_terms(x, drawn, 0)
        grad = flat_grad(loss, net)
        runs[precision] = (terms, grad, time.perf_counter() - start)
    (t32, g32, s32), (t16, g16, s16) = runs["fp32"], runs["bf16"]
    pairs = t32.r < t32.t
    a, b = t32.target.u_tgt[pairs], t16.target.u_tgt[pairs]
    part = "du_dt" if bool(t32.target.jvp.any()) else "u_next"
    na, nb = getattr(t32.target, part)[pairs], getattr(t16.target, part)[pairs]
    net_rel = float((na - nb).norm() / na.norm()) if bool(na.any()) else 0.0
    # The reference: fp32 target, training forward (the prediction) under bf16 autocast.
    objective = create_objective(preset, net, label_dropout=0.0, **overrides)
    drawn = objective.draw(x, y, 0, torch.Generator().manual_seed(seed))
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss, _ = objective.loss_terms(x, drawn, 0)
    g_ref = flat_grad(loss, net)
    return {
        "rel_l2": float((a - b).norm() / a.norm().clamp_min(1e-30)),
        "net_rel": net_rel,
        "max_abs": float((a - b).abs().max()),
        "cos_grad": cosine(g32, g16),
        "ref_cos": cosine(g32, g_ref),
        "s_fp32": s32,
        "s_bf16": s16,
    }


def table(title: str, net: nn.Module, x: Tensor, y: Tensor, seed: int) -> None:
    print(f"\n{title}")
    print(f"{'objective':<26}{'rel_l2':>10}{'net_rel':>10}{'max_abs':>10}{'1-cos_grad':>12}{'1-ref_cos':>11}"
          f"{'s fp32':>8}{'s bf16':>8}")
    for label, preset, overrides in OBJECTIVES:
        m = measure(net, preset, overrides, x, y, seed)
        print(f"{label:<26}{m['rel_l2']:>10.2e}{m['net_rel']:>10.2e}{m['max_abs']:>10.2e}{1 - m['cos_grad']:>12.2e}"
              f"{1 - m['ref_cos']:>11.2e}{m['s_fp32']:>8.2f}{m['s_bf16']:>8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a flowzoo digits run's checkpoint instead of training one")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the digits model")
    parser.add_argument("--digits-batch", type=int, default=256)
    parser.add_argument("--dit-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dit", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpu; 1-cos = 1 - cosine (0 = same direction)")

    start = time.perf_counter()
    if args.checkpoint:
        from flowzoo.pipeline.sample import load_run

        net, dataset, _, _ = load_run(args.checkpoint, -1)  # the raw weights: the ones the target uses in training
        source = args.checkpoint
    else:
        net, dataset = train_digits_model(args.steps, args.seed)
        source = f"alphaflow preset trained {args.steps} steps here ({time.perf_counter() - start:.0f} s)"
    net.train()
    x, y = next(iter(dataset.stream(args.digits_batch, seed=args.seed + 1)))
    table(f"(1) digits, MLP 256x4, batch {len(x)}, {source}", net, x.float(), y, args.seed)

    if not args.skip_dit:
        net = random_dit_b2(args.seed)
        g = torch.Generator().manual_seed(args.seed + 1)  # not the draw's seed: e must differ from x
        x = torch.randn(args.dit_batch, 4, 32, 32, generator=g)
        y = torch.randint(0, 1000, (args.dit_batch,), generator=g)
        table(f"(2) DiT-B/2, random init, 4x32x32 latents, batch {args.dit_batch}", net, x, y, args.seed)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
