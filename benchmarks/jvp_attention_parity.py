"""Parity of the fused JVP attention kernel (objective.jvp: {name: forward, attention: jvp_flash}) on CUDA.

Issue 16, item 2. A randomly initialised DiT-B/2 on random 4x32x32 latents (the zero-initialised
adaLN-Zero layers perturbed, so that u and its tangent are not identically zero), the MeanFlow preset
with fm_ratio 0 (every sample takes the JVP target). For each target precision (fp32: autocast off;
bf16: the target's network calls under bf16 autocast, as objective.target_precision bf16 runs them):

    rel_l2     ||du/dt(jvp_flash) - du/dt(math)|| / ||du/dt(math)||, the forward backend, the tangent the
               MeanFlow target used (math: SDPA on the math kernel, the default)
    functorch  the same for the functorch backend (torch.func.jvp) with jvp_flash
    vs fp32    ||du/dt(jvp_flash) - du/dt(math, fp32)|| / ||du/dt(math, fp32)||: for scale, next to the
               bf16 row's own rounding
    1-cos_grad 1 - cosine between the MeanFlow loss's parameter gradients with the two targets
               (prediction in fp32 in both)
    ms math / ms flash / speedup   one JVP (forward backend) with each kernel, median of --repeats

The Triton kernel computes fp32 dot products in TF32 (Triton's default for float32 tl.dot), so the
fp32 row's rel_l2 is expected at TF32's ~1e-3, not at fp32's 1e-6.

    python benchmarks/jvp_attention_parity.py          # about half a minute on an H100, compiles included

Without CUDA it prints one sentence and exits 0 (skipped); with CUDA but without the kernel's package it
prints the refusal (pip install 'flowzoo[gpu]') and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time

import torch
from torch import Tensor, nn

from flowzoo.backbones import create_backbone
from flowzoo.backbones.attention import AttentionKernelError, check_kernel
from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import get_jvp_backend
from flowzoo.objectives.velocity import ConditionedVelocity


def random_dit_b2(seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    net = create_backbone("DiT-B/2", input_size=32, in_channels=4, num_classes=1000)
    with torch.no_grad():  # adaLN-Zero: the zero-initialised layers would make u identically 0
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net.to(device).train()


def flat_grad(loss: Tensor, net: nn.Module) -> Tensor:
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b) / float(a.norm() * b.norm())


def rel_l2(a: Tensor, ref: Tensor) -> float:
    return float((a.double() - ref.double()).norm() / ref.double().norm())


def spec(name: str, attention: str) -> dict:
    return {"name": name, "attention": attention}


def meanflow_step(net, x, y, attention: str, precision: str, seed: int) -> tuple[Tensor, Tensor]:
    """(du/dt the target used, the loss's parameter gradient) for one MeanFlow step."""
    objective = create_objective("meanflow", net, label_dropout=0.0, fm_ratio=0.0,
                                 jvp=spec("forward", attention), target_precision=precision)
    drawn = objective.draw(x, y, 0, torch.Generator(device=x.device).manual_seed(seed))
    loss, terms = objective.loss_terms(x, drawn, 0)
    return terms.target.du_dt.detach().float(), flat_grad(loss, net)


def jvp_call(backend: str, attention: str, precision: str, u, z, r, t, v):
    fn = get_jvp_backend(spec(backend, attention))

    def call():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return fn(u, z, r, t, v)

    return call


def median_ms(call, repeats: int) -> float:
    for _ in range(2):  # Triton compiles (and the math path warms up) outside the timing
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available on this machine, so the jvp_flash parity check (a GPU check) was skipped.")
        return 0
    try:
        check_kernel("jvp_flash")
    except AttentionKernelError as exc:
        print(f"jvp_flash parity check not run: {exc}")
        return 2
    start = time.perf_counter()
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {version('triton')}, "
          f"jvp-flash-attention {version('jvp-flash-attention')}; DiT-B/2, batch {args.batch}, 4x32x32, "
          f"256 tokens, head dim 64")

    net = random_dit_b2(args.seed, device)
    g = torch.Generator(device=device).manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 4, 32, 32, generator=g, device=device)
    y = torch.randint(0, 1000, (args.batch,), generator=g, device=device)
    e = torch.randn(x.shape, generator=g, device=device)
    t = torch.rand(args.batch, generator=g, device=device) * 0.8 + 0.1
    r = t * torch.rand(args.batch, generator=g, device=device)
    z = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * e
    u = ConditionedVelocity(net, y)

    print(f"{'target':<8}{'rel_l2':>10}{'functorch':>11}{'vs fp32':>10}{'1-cos_grad':>12}"
          f"{'ms math':>10}{'ms flash':>10}{'speedup':>9}")
    reference = None
    for precision in ("fp32", "bf16"):
        d_math, g_math = meanflow_step(net, x, y, "math", precision, args.seed)
        d_flash, g_flash = meanflow_step(net, x, y, "jvp_flash", precision, args.seed)
        reference = d_math if reference is None else reference
        assert d_math.abs().max() > 0, "the tangent is identically zero: the comparison would say nothing"
        _, d_func_math = jvp_call("functorch", "math", precision, u, z, r, t, e - x)()
        _, d_func_flash = jvp_call("functorch", "jvp_flash", precision, u, z, r, t, e - x)()
        ms_math = median_ms(jvp_call("forward", "math", precision, u, z, r, t, e - x), args.repeats)
        ms_flash = median_ms(jvp_call("forward", "jvp_flash", precision, u, z, r, t, e - x), args.repeats)
        print(f"{precision:<8}{rel_l2(d_flash, d_math):>10.2e}{rel_l2(d_func_flash, d_func_math):>11.2e}"
              f"{rel_l2(d_flash, reference):>10.2e}{1 - cosine(g_flash, g_math):>12.2e}"
              f"{ms_math:>10.2f}{ms_flash:>10.2f}{ms_math / ms_flash:>8.2f}x", flush=True)
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
