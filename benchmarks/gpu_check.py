"""Everything issue 16 asks of one GPU, in one run that prints one table (benchmarks/gpu_check.sh calls it).

    python benchmarks/gpu_check.py                 # on one H100: about 5-8 minutes
    python benchmarks/gpu_check.py --smoke         # the same code paths on a CPU with a tiny DiT (~1 minute)

Sections (each also in the JSON record, runs/gpu_check/record.json):
  1. perf      `flowzoo bench perf --setting gpu`: every objective and JVP backend (the fused jvp_flash
               attention included) as a ratio to a flow-matching step on DiT-B/2, 4x32x32, batch 64, bf16;
               images/s, peak memory, the flow-matching step's model-FLOPs utilisation, issue 16's targets.
  2. parity    benchmarks/jvp_attention_parity.py: fused vs math JVP attention (tangent error, gradient
               cosine) in fp32 and bf16.
  3. train     200 steps of DiT-B/2 alpha-Flow (sigmoid curriculum over the 200 steps, so both the
               two-point and the JVP branch run) on random latents through flowzoo's own training loop
               (flowzoo.train.train: EMA, clipping, checkpoint), bf16, with and without train.compile:
               steady-state step time, images/s, compile overhead, peak memory, final loss finite.
  4. max batch the largest DiT-XL/2 batch whose bf16 training step (forward with target, backward, Adam)
               fits, for flow matching and MeanFlow (the JVP target is the memory-hungry one).
  5. accumulate  2 fp32 MeanFlow steps of DiT-B/2 at batch 64 through flowzoo's training loop, in one round
               and in 4 rounds of 16 (train.batch_per_device): the largest relative parameter difference
               (issue 27: one accumulated step equals one full-batch step, to round-off) and both step times.
  6. shard     samples on the device present at two batch sizes and as two halves of the indices (what two
               ranks of `flowzoo eval` under torchrun draw): the largest difference from one batch.
  7. tf32      an fp32 flow-matching step with train.tf32 off (the default) and on: the speed TF32 buys.

Nothing downloads; the latents are random. The record says which device produced it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowzoo.backbones import create_backbone
from flowzoo.bench.perf import device_description, run_perf
from flowzoo.data.stream import EpochStream
from flowzoo.objectives import create_objective

ROOT = Path(__file__).resolve().parents[1]

FULL = dict(device="cuda", backbone="DiT-B/2", input_size=32, in_channels=4, num_classes=1000, perf_batch=64,
            perf_rounds=8, train_batch=64, train_steps=200, xl_backbone="DiT-XL/2", max_batch_cap=4096)
SMOKE = dict(device="cpu", backbone="DiT-tiny/2", input_size=8, in_channels=4, num_classes=10, perf_batch=4,
             perf_rounds=1, train_batch=8, train_steps=8, xl_backbone="DiT-tiny/2", max_batch_cap=16)


class RandomLatents:
    """N random 'latents' with random labels: a dataset for flowzoo.train.train that needs no download."""

    def __init__(self, n: int, shape: tuple[int, ...], num_classes: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, *shape, generator=g)
        self.y = torch.randint(0, num_classes, (n,), generator=g)
        self.sample_shape, self.num_classes = shape, num_classes

    def stream(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> EpochStream:
        return EpochStream(self.x, self.y, batch_size, seed, rank, world_size)


def perturbed_backbone(name: str, cfg: dict, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """A DiT with its adaLN-Zero layers perturbed, so the network is not identically zero at step 0."""
    torch.manual_seed(seed)
    net = create_backbone(name, input_size=cfg["input_size"], in_channels=cfg["in_channels"],
                          num_classes=cfg["num_classes"])
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ 1
def section_perf(cfg: dict) -> dict:
    record = run_perf(setting="gpu" if cfg["device"] == "cuda" else "cpu", device=cfg["device"],
                      backbone=cfg["backbone"], input_size=cfg["input_size"], in_channels=cfg["in_channels"],
                      num_classes=cfg["num_classes"], batch=cfg["perf_batch"], precision="bf16",
                      rounds=cfg["perf_rounds"], block=2, warmup=2, total_steps=1000)
    for row in record["cases"]:
        row.pop("times_ms", None)
    return record


# ------------------------------------------------------------------------------------------------ 2
def section_parity() -> dict:
    script = ROOT / "benchmarks" / "jvp_attention_parity.py"
    if not script.exists():
        return {"status": "missing", "output": f"{script} not found"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    return {"status": "ok" if done.returncode == 0 else f"exit {done.returncode}",
            "output": (done.stdout + done.stderr).strip()}


# ------------------------------------------------------------------------------------------------ 3
def train_once(cfg: dict, compiled: bool, device: torch.device) -> dict:
    from flowzoo.train import TrainOptions, train

    shape = (cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    data = RandomLatents(max(4 * cfg["train_batch"], 256), shape, cfg["num_classes"])
    net = perturbed_backbone(cfg["backbone"], cfg, device)
    steps = cfg["train_steps"]
    objective = create_objective("alphaflow", net, total_steps=steps)  # sigmoid 1 -> 0 within these steps
    stamps: list[tuple[int, float]] = []

    def stamp(step, state):  # called every sample_every steps: wall clock at step boundaries
        _sync(device)
        stamps.append((step, time.perf_counter()))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as out:
        options = TrainOptions(out_dir=out, steps=steps, batch_size=cfg["train_batch"], warmup_steps=0,
                               precision="bf16", compile=compiled, device=str(device), quiet=True,
                               checkpoint_every=steps, sample_every=max(steps // 4, 1), log_every=max(steps // 4, 1),
                               ema_halflives=[500.0])
        start = time.perf_counter()
        train(options, net, objective, data, hooks=[stamp])
        _sync(device)
        total = time.perf_counter() - start
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # Steady state: the fastest window between stamps after the first (compile and warm-up come first; a
    # recompile when the curriculum changes branch lands in a later window and counts as overhead).
    windows = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]) if s1 > s0 and s0 > 0]
    step_s = min(windows) if windows else total / steps
    loss = lines[-1].get("loss") if lines else None
    return {
        "compiled": compiled, "steps": steps, "batch": cfg["train_batch"], "total_s": total,
        "steady_step_ms": 1e3 * step_s, "images_per_s": cfg["train_batch"] / step_s,
        "overhead_s": total - step_s * steps,  # compile and recompiles, first-step allocation, checkpoint write
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "final_loss": loss, "finite": loss is not None and math.isfinite(loss),
    }


def section_train(cfg: dict, device: torch.device) -> list[dict]:
    rows = []
    for compiled in (False, True):
        try:
            rows.append(train_once(cfg, compiled, device))
        except Exception as exc:  # a compile failure is a result to report, not a reason to stop
            rows.append({"compiled": compiled, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
    return rows


# ------------------------------------------------------------------------------------------------ 4
def step_fits(net: torch.nn.Module, preset: str, batch: int, cfg: dict, device: torch.device) -> tuple[bool, float | None]:
    """Whether one bf16 training step of ``preset`` at ``batch`` fits, and its peak memory in GiB."""
    shape = (cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    objective = create_objective(preset, net, total_steps=1000)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, cfg["num_classes"], (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = objective(x, y, 500, torch.Generator(device).manual_seed(0))
        loss.backward()
        optimizer.step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return True, peak
    except torch.OutOfMemoryError:
        return False, None
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(preset: str, cfg: dict, device: torch.device) -> dict:
    """Doubling from 8, then bisection to a multiple of 8, up to the cap."""
    net = perturbed_backbone(cfg["xl_backbone"], cfg, device).train()
    fits, peak = {}, {}

    def probe(b: int) -> bool:
        fits[b], peak[b] = step_fits(net, preset, b, cfg, device)
        return fits[b]

    lo, hi = 0, None
    b = 8
    while b <= cfg["max_batch_cap"]:
        if probe(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is not None:
        while hi - lo > 8:
            mid = (lo + hi) // 2 // 8 * 8
            if mid <= lo:
                break
            lo, hi = (mid, hi) if probe(mid) else (lo, mid)
    del net
    return {"preset": preset, "backbone": cfg["xl_backbone"], "largest_batch": lo,
            "peak_memory_gb": peak.get(lo), "capped": hi is None, "probes": sorted(fits)}


def section_max_batch(cfg: dict, device: torch.device) -> list[dict]:
    return [largest_batch(preset, cfg, device) for preset in ("flow_matching", "meanflow")]


# ------------------------------------------------------------------------------------------------ 5
def section_accumulate(cfg: dict, device: torch.device) -> dict:
    from flowzoo.train import TrainOptions, train

    shape = (cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    data = RandomLatents(4 * cfg["train_batch"], shape, cfg["num_classes"])
    finals, times = {}, {}
    for rounds in (1, 4):
        net = perturbed_backbone(cfg["backbone"], cfg, device)
        with tempfile.TemporaryDirectory() as out:
            options = TrainOptions(out_dir=out, steps=2, batch_size=cfg["train_batch"], warmup_steps=0, precision="fp32",
                                   device=str(device), quiet=True, checkpoint_every=2, sample_every=2, log_every=1,
                                   batch_per_device=None if rounds == 1 else cfg["train_batch"] // rounds)
            start = time.perf_counter()
            train(options, net, create_objective("meanflow", net, total_steps=2), data)
            _sync(device)
            times[rounds] = (time.perf_counter() - start) / 2
        finals[rounds] = torch.cat([p.detach().flatten().float() for p in net.parameters()])
    diff = float((finals[4] - finals[1]).abs().max() / finals[1].abs().max().clamp_min(1e-12))
    return {"rounds": 4, "batch": cfg["train_batch"], "max_relative_parameter_difference": diff,
            "step_s_one_round": times[1], "step_s_four_rounds": times[4]}


# ------------------------------------------------------------------------------------------------ 6
def section_shard(cfg: dict, device: torch.device) -> dict:
    from flowzoo.pipeline.evaluate import generate

    class Latents:
        sample_shape, num_classes = (cfg["in_channels"], cfg["input_size"], cfg["input_size"]), cfg["num_classes"]

    net = perturbed_backbone(cfg["backbone"], cfg, device).eval()
    n = 256 if device.type == "cuda" else 16
    out = {}
    for sampler in ("meanflow", "consistency"):
        whole, _ = generate(net, Latents, sampler, 2, n, seed=0, batch_size=n)
        small, _ = generate(net, Latents, sampler, 2, n, seed=0, batch_size=n // 8)
        halves = torch.cat([generate(net, Latents, sampler, 2, n, seed=0, indices=list(range(a, b)))[0]
                            for a, b in ((0, n // 2), (n // 2, n))])
        out[sampler] = {"max_abs_diff_batch": float((whole - small).abs().max()),
                        "max_abs_diff_halves": float((whole - halves).abs().max()), "samples": n}
    return out


# ------------------------------------------------------------------------------------------------ 7
def section_tf32(cfg: dict, device: torch.device) -> dict:
    from flowzoo.precision import set_tf32

    shape = (cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    net = perturbed_backbone(cfg["backbone"], cfg, device)
    objective = create_objective("flow_matching", net, total_steps=10)
    x = torch.randn(cfg["perf_batch"], *shape, device=device)
    y = torch.randint(0, cfg["num_classes"], (cfg["perf_batch"],), device=device)
    out = {}
    for tf32 in (False, True, False, True):  # interleaved: the second pass of each is timed
        set_tf32(tf32)
        times = []
        for _ in range(5):
            _sync(device)
            start = time.perf_counter()
            loss, _ = objective(x, y, 0, torch.Generator(device).manual_seed(0))
            loss.backward()
            _sync(device)
            times.append(time.perf_counter() - start)
        out["on" if tf32 else "off"] = 1e3 * sorted(times)[len(times) // 2]
    set_tf32(False)
    return {"fp32_fm_step_ms_tf32_off": out["off"], "fp32_fm_step_ms_tf32_on": out["on"],
            "speedup": out["off"] / out["on"]}


# ------------------------------------------------------------------------------------------------ table
def cfg_steps(record: dict) -> int:
    return record["config"]["train_steps"]


def summary_lines(record: dict) -> list[str]:
    rows = [("device", record["device"], "", "")]
    for name in ("perf", "parity", "train", "max_batch"):
        if isinstance(record[name], dict) and "error" in record[name]:
            rows.append((f"{name} section", "failed: " + record[name]["error"][:70], "", ""))
            record[name] = {"perf": {"cases": [], "summary": {}, "targets": {}, "utilisation": None},
                            "parity": {"status": "failed", "output": ""}, "train": [], "max_batch": []}[name]
    perf = record["perf"]
    s, targets, u = perf["summary"], perf["targets"], perf["utilisation"]
    for c in perf["cases"]:
        value = "failed: " + c["error"][:70] if c["error"] else (
            f"x{c['ratio_to_flow_matching']:.2f} FM, {c['median_ms']:.1f} ms, {c['images_per_s']:.0f} img/s, "
            + ("-" if c["peak_memory_mb"] is None else f"{c['peak_memory_mb'] / 1024:.2f} GiB"))
        rows.append((f"perf {c['label']}", value, "", ""))
    if "alpha_positive_ratio" in s:
        rows.append(("alpha>0 step / FM", f"{s['alpha_positive_ratio']:.2f}", f"<= {targets['alpha_positive_max_ratio']}",
                     "yes" if s["alpha_positive_meets_target"] else "NO"))
    if "best_meanflow_ratio" in s:
        rows.append((f"best MeanFlow / FM ({s['best_meanflow']})", f"{s['best_meanflow_ratio']:.2f}",
                     f"<= {targets['meanflow_max_ratio']}", "yes" if s["meanflow_meets_target"] else "NO"))
    if "best_meanflow_vs_official" in s:
        goal = targets.get("official_min_speedup")
        rows.append(("official-style / best MeanFlow", f"{1 / s['best_meanflow_vs_official']:.2f}x",
                     f">= {goal}x" if goal else "", "" if goal is None else
                     ("yes" if s.get("official_speedup_meets_target") else "NO")))
    if u is not None:
        mfu = "-" if u["mfu"] is None else f"{100 * u['mfu']:.1f}% of {u['peak_bf16_tflops']:.0f} TFLOP/s"
        rows.append(("FM step model-FLOPs utilisation", f"{u['achieved_tflops']:.1f} TFLOP/s", mfu, ""))
    parity = record["parity"]
    rows.append(("fused vs math JVP attention", parity["status"], "", ""))
    for r in record["train"]:
        label = f"train {cfg_steps(record)} steps alpha-Flow bf16{' +compile' if r['compiled'] else ''}"
        if "error" in r:
            rows.append((label, "failed: " + r["error"][:70], "", ""))
            continue
        mem = "" if r["peak_memory_gb"] is None else f", {r['peak_memory_gb']:.1f} GiB"
        rows.append((label, f"{r['steady_step_ms']:.1f} ms/step, {r['images_per_s']:.0f} img/s, overhead "
                     f"{r['overhead_s']:.0f} s{mem}, loss {r['final_loss']:.3g}", "finite", "yes" if r["finite"] else "NO"))
    for m in record["max_batch"]:
        mem = "" if m["peak_memory_gb"] is None else f" ({m['peak_memory_gb']:.1f} GiB)"
        rows.append((f"largest {m['backbone']} batch, {m['preset']}", f"{m['largest_batch']}{mem}"
                     + (" (cap reached)" if m["capped"] else ""), "", ""))
    acc = record.get("accumulate", {})
    if "error" in acc:
        rows.append(("accumulation: 4 rounds vs 1", "failed: " + acc["error"][:70], "", ""))
    elif acc:
        rows.append(("accumulation: 4 rounds vs 1, 2 MeanFlow steps fp32", f"max rel param diff {acc['max_relative_parameter_difference']:.1e}; "
                     f"{1e3 * acc['step_s_one_round']:.0f} vs {1e3 * acc['step_s_four_rounds']:.0f} ms/step",
                     "<= 1e-4", "yes" if acc["max_relative_parameter_difference"] <= 1e-4 else "NO"))
    for sampler, sh in ({} if "error" in record.get("shard", {}) else record.get("shard", {})).items():
        worst = max(sh["max_abs_diff_batch"], sh["max_abs_diff_halves"])
        rows.append((f"samples by index ({sampler}, 2 NFE): batch / halves vs one batch", f"max abs diff {worst:.1e}",
                     "<= 1e-3", "yes" if worst <= 1e-3 else "NO"))
    tf = record.get("tf32", {})
    if tf and "error" not in tf:
        rows.append(("fp32 FM step, train.tf32 off vs on", f"{tf['fp32_fm_step_ms_tf32_off']:.1f} vs "
                     f"{tf['fp32_fm_step_ms_tf32_on']:.1f} ms (x{tf['speedup']:.2f})", "", ""))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("check", "value", "target", "met")
    width = [max(w, len(h)) for w, h in zip(width, head)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in width) + " |"
    out = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    out += [fmt.format(*r) for r in rows]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny DiT on the CPU: checks the script, measures nothing")
    parser.add_argument("--out", default="runs/gpu_check/record.json")
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device here; run it on a GPU machine, or pass --smoke to check the "
              "script on a CPU.", file=sys.stderr)
        return 2
    device = torch.device(cfg["device"])
    record = {"schema": "flowzoo.gpu_check/1", "device": device_description(device), "torch": torch.__version__,
              "smoke": args.smoke, "config": cfg, "seconds": {}}
    for name, run in (("perf", lambda: section_perf(cfg)), ("parity", section_parity),
                      ("train", lambda: section_train(cfg, device)), ("max_batch", lambda: section_max_batch(cfg, device)),
                      ("accumulate", lambda: section_accumulate(cfg, device)), ("shard", lambda: section_shard(cfg, device)),
                      ("tf32", lambda: section_tf32(cfg, device))):
        start = time.perf_counter()
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            record[name] = run()
        except Exception as exc:  # one failed section is a result to report; the others still run
            record[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        record["seconds"][name] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nflowzoo gpu_check on {record['device']} (torch {record['torch']}), seconds per section: {record['seconds']}")
    print("\n".join(summary_lines(record)))
    print("\nfused vs math JVP attention (benchmarks/jvp_attention_parity.py):\n" + record["parity"]["output"])
    print(f"\nrecord: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
