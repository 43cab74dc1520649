"""Training-step cost of every objective, as a ratio to a flow-matching step on the same DiT and batch.

    flowzoo bench perf                                  # CPU: DiT-tiny/2, 4x16x16, batch 32, 1 thread
    flowzoo bench perf --setting gpu                    # DiT-B/2, 4x32x32, batch 64, bf16 autocast, cuda
    flowzoo bench perf --compile                        # also every case under torch.compile (slow on CPU)
    flowzoo bench perf --setting tiny                   # seconds: a 4x4 input, one timed step per case (a smoke test)

One step = the objective's forward (target included) + backward + Adam update, as in flowzoo.train.loop
(without EMA / clipping / logging, which cost every objective the same). Cases, each with its own copy of
one initial network and its own Adam:
  - every registered objective at its preset defaults, at the middle of a ``total_steps`` run (so the
    alphaflow curriculum is mid-way, 0 < alpha < 1, and pays the two-point target's extra forward);
  - alphaflow at the curriculum's end (alpha = 0: the JVP target on its r < t samples);
  - meanflow with each registered JVP backend (forward is the preset's; functorch; double_backward;
    finite_difference);
  - ``official_style_meanflow``: the official alpha-Flow code's approach (see ``official_style_meanflow_loss``).
The cases run interleaved, round-robin, a block of steps each, in one process, so load drift on the
machine hits them alike; ratios are medians over steps divided by flow matching's median.

Peak memory is the high-water mark of tensor bytes allocated during one step above the level at its
start (activations, gradients, Adam state on the first step, temporaries): on CUDA from
torch.cuda.max_memory_allocated, on CPU reconstructed from torch.profiler's allocation/free records
(the same quantity, from the CPU allocator's reports; None when that private profiler API is missing).
The profiler's native layer (kineto) prints start/stop markers and, without a GPU, a device-count error
straight to the process's stdout/stderr; those known lines are kept out of the terminal (anything else it
writes is shown).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from flowzoo.atomic import atomic_write
from flowzoo.backbones import create_backbone
from flowzoo.leaderboard.compute_cost import forward_flops_per_sample
from flowzoo.objectives import create_objective
from flowzoo.objectives.target import per_sample
from flowzoo.objectives.unified import DrawnBatch, UnifiedObjective
from flowzoo.pipeline.provenance import cpu_capability, cpu_model, hardware
from flowzoo.registry import JVP_BACKENDS, OBJECTIVES

SCHEMA = "flowzoo.bench.perf/1"
BASELINE = "flow_matching"
OFFICIAL = "official_style_meanflow"
# Targets of issue #8 (CPU, small DiT, batch 32): an alpha > 0 step vs FM, and the best MeanFlow step vs FM.
TARGETS = {"alpha_positive_max_ratio": 1.45, "meanflow_max_ratio": 2.0}
# Targets of issue #16 (one H100, DiT-B/2): alpha > 0 at most 1.25x FM, MeanFlow at most 1.5x with the fused
# JVP attention, and at least 2x faster than the official-style step.
GPU_TARGETS = {"alpha_positive_max_ratio": 1.25, "meanflow_max_ratio": 1.5, "official_min_speedup": 2.0}
# Dense bf16 tensor-core peaks (NVIDIA data sheets, TFLOP/s without sparsity), for the model-FLOPs
# utilisation of the flow-matching step; matched against the device name, overridable by --peak-tflops.
PEAK_BF16_TFLOPS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.4, "A100": 312.0, "L40S": 362.1}

# Named settings; any option given explicitly overrides the setting's value.
SETTINGS: dict[str, dict[str, Any]] = {
    "cpu": dict(device="cpu", backbone="DiT-tiny/2", input_size=16, in_channels=4, num_classes=10,
                batch=32, precision="fp32", threads=1),
    "gpu": dict(device="cuda", backbone="DiT-B/2", input_size=32, in_channels=4, num_classes=1000,
                batch=64, precision="bf16", threads=None),
    # A smoke test of every case in seconds (CI); its ratios mean little at this size.
    "tiny": dict(device="cpu", backbone="DiT-tiny/2", input_size=4, in_channels=2, num_classes=3,
                 batch=4, precision="fp32", threads=1),
}
SETTING_TARGETS = {"cpu": TARGETS, "gpu": GPU_TARGETS, "tiny": TARGETS}
# How long each setting measures (rounds, timed steps per case per round, untimed steps first), unless given.
SETTING_SCHEDULE = {"cpu": dict(rounds=12, block=2, warmup=2), "gpu": dict(rounds=12, block=2, warmup=2),
                    "tiny": dict(rounds=1, block=1, warmup=1)}
# What torch's profiler (kineto) writes to fd 1/2 from C++, past Python's sys.stdout/stderr.
PROFILER_CHATTER = re.compile(r"^(USDT:.*profiler_(start|stop)|ERROR:.*gpuGetDeviceCount failed|STAGE:.*ActivityProfiler"
                              r"|.*(ActivityProfilerController|CuptiActivityProfiler|SyncActivityProfilerHandler)\.cpp)")
JVP_FLASH = {"name": "forward", "attention": "jvp_flash"}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU from its name (None when unknown: give --peak-tflops)."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if all(word in device_name for word in key.split()):
            return value
    return None



# --------------------------------------------------------------------------------------------------
# The official alpha-Flow code's MeanFlow step, re-implemented as a baseline (our own code).
# --------------------------------------------------------------------------------------------------
def official_style_meanflow_loss(net: nn.Module, x: Tensor, drawn: DrawnBatch, c: float = 1e-2, p: float = 1.0) -> Tensor:
    """MeanFlow's loss the way the official alpha-Flow code computes it, for a baseline.

    The JVP d/dt u(z_t, r, t) along tangents (v, 0, 1) by the double-backward trick
    (torch.autograd.functional.jvp) on the *whole* batch, r = t samples included (their target is
    v - 0 * du/dt = v anyway), then a separate forward for the prediction; attention on the math kernel
    for all of it. Adaptive weight 1/(||Delta||^2 + c)^p on the per-sample *sum* of squares, as MeanFlow's
    official JAX code (c = 0.01, p = 1): the meanflow preset's loss, whose weighted value is
    D ||Delta||^2 / (D ||Delta||^2 + c) with the per-element mean ||Delta||^2 over D elements.
    """
    e, t, r, labels = drawn.noise, drawn.t, drawn.r, drawn.labels
    z_t = per_sample(1 - t, x) * x + per_sample(t, x) * e
    v = e - x

    def u(z: Tensor, t_: Tensor) -> Tensor:
        return net(z, t_, t_ - r, labels)

    with sdpa_kernel(SDPBackend.MATH):
        with torch.autocast(x.device.type, enabled=False):
            _, du_dt = torch.autograd.functional.jvp(u, (z_t.detach(), t.detach()), (v.detach(), torch.ones_like(t)))
        u_tgt = (v - per_sample(t - r, x) * du_dt).detach()
        pred = u(z_t, t).float()
    sq_sum = (pred - u_tgt).pow(2).flatten(1).sum(1)
    weight = 1.0 / (sq_sum.detach() + c).pow(p)
    return (weight * sq_sum).mean()


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    label: str
    objective: str  # registered name; the official baseline draws its randomness from this preset
    overrides: dict = field(default_factory=dict)
    at: str = "mid"  # mid | end of the total_steps run
    official: bool = False
    compiled: bool = False


def default_cases(objectives: list[str], jvp_backends: bool, official: bool, compile: bool,
                  cuda: bool = False, bf16: bool = False) -> list[Case]:
    cases = [Case(name, name) for name in objectives]
    if "alphaflow" in objectives:
        cases.append(Case("alphaflow@end", "alphaflow", at="end"))
    if "meanflow" in objectives and jvp_backends:
        preset_jvp = OBJECTIVES.get("meanflow").default_config.jvp
        cases += [Case(f"meanflow[jvp={b}]", "meanflow", {"jvp": b}) for b in JVP_BACKENDS.names() if b != preset_jvp]
        if cuda:  # the fused Triton JVP attention (flowzoo[gpu]); a row that failed says why it cannot run
            cases.append(Case("meanflow[jvp=forward+jvp_flash]", "meanflow", {"jvp": dict(JVP_FLASH)}))
    if "meanflow" in objectives and bf16:  # what the bf16 target (target_precision auto) saves over fp32
        cases.append(Case("meanflow[target fp32]", "meanflow", {"target_precision": "fp32"}))
    if "meanflow" in objectives and official:
        cases.append(Case(OFFICIAL, "meanflow", official=True))
    if compile:
        cases += [replace(c, label=c.label + "+compile", compiled=True) for c in cases if not c.official]
    return cases


@dataclass
class Runner:
    """One case's network, objective, optimizer and step function."""

    case: Case
    objective: UnifiedObjective
    optimizer: torch.optim.Optimizer
    step_fn: Callable[[int], Tensor]
    schedule_step: int
    alpha: float
    times: list[float] = field(default_factory=list)
    peak_bytes: Optional[int] = None
    error: Optional[str] = None


def build_runner(case: Case, make_net: Callable[[], nn.Module], x: Tensor, y: Tensor, total_steps: int,
                 bf16: bool) -> Runner:
    net = make_net()
    objective = create_objective(case.objective, net, total_steps=total_steps, **case.overrides).to(x.device)
    if objective.config.target_network == "ema":  # Shortcut: a frozen copy stands in for the EMA network
        objective.set_target_network(copy.deepcopy(net).requires_grad_(False))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.95))
    schedule_step = total_steps // 2 if case.at == "mid" else total_steps - 1
    model = torch.compile(objective) if case.compiled else objective

    def loss_of(k: int) -> Tensor:
        generator = torch.Generator(x.device).manual_seed(k)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            if case.official:
                return official_style_meanflow_loss(net, x, objective.draw(x, y, schedule_step, generator))
            return model(x, y, schedule_step, generator)[0]

    def step_fn(k: int) -> Tensor:
        loss = loss_of(k)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    alpha = float(objective.alpha_schedule.value(schedule_step))
    return Runner(case, objective, optimizer, step_fn, schedule_step, alpha)


def build_or_fail(case: Case, make_net: Callable[[], nn.Module], x: Tensor, y: Tensor, total_steps: int,
                  bf16: bool) -> Runner:
    """build_runner, or a runner that only carries why the case cannot run here (e.g. jvp_flash without
    its kernel): the table shows that row as failed and times the rest."""
    try:
        return build_runner(case, make_net, x, y, total_steps, bf16)
    except Exception as exc:
        return Runner(case, None, None, None, 0, float("nan"), error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_step_bytes(step: Callable[[], Any], device: torch.device) -> Optional[int]:
    """High-water mark of tensor bytes allocated during ``step()`` above the level at its start."""
    if device.type == "cuda":
        _sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
            step()
        timeline = prof._memory_profile().timeline  # (time, action, (key, version), bytes), private API
    except Exception:  # the private memory-profile API moved: report no number rather than a wrong one
        return None
    live = peak = 0
    for _, action, _, nbytes in sorted(timeline, key=lambda event: event[0]):
        if action.name == "CREATE":
            live += nbytes
        elif action.name == "DESTROY":
            live -= nbytes
        peak = max(peak, live)
    return int(peak)


@contextmanager
def native_output_filtered(chatter: re.Pattern = PROFILER_CHATTER):
    """Send what C/C++ code writes to fd 1 and 2 during the block to a temporary file; afterwards, show on
    stderr every line of it that is not known chatter (so nothing unexpected is lost)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no fds to redirect (an embedded interpreter): let the output through
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines()
                    if line.strip() and not chatter.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def time_interleaved(runners: list[Runner], rounds: int, block: int, warmup: int, device: torch.device,
                     progress: Callable[[str], None] | None = None) -> None:
    """Round-robin: each round runs ``block`` timed steps of every case, in a fresh random order per round
    (a fixed order would hand each case the same neighbour's cache state every round)."""
    live = [r for r in runners if r.error is None]
    order = random.Random(0)
    for runner in live:
        try:
            for k in range(warmup):
                runner.step_fn(10_000 + k)
            _sync(device)
        except Exception as exc:  # e.g. torch.compile failing on forward-mode AD: record it, time the rest
            runner.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    live = [r for r in live if r.error is None]
    for rnd in range(rounds):
        order.shuffle(live)
        for runner in live:
            for k in range(block):
                _sync(device)
                start = time.perf_counter()
                runner.step_fn(rnd * block + k)
                _sync(device)
                runner.times.append(time.perf_counter() - start)
        if progress is not None:
            progress(f"round {rnd + 1}/{rounds}")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model() or platform.machine()} CPU, {cpu_capability() or 'capability unknown'} kernels ({platform.system()})"


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------
def run_perf(
    setting: str = "cpu",
    device: str | None = None,  # cpu | cuda | cuda:1 ... (default: the setting's)
    backbone: str | None = None,  # registered backbone name (default: the setting's)
    input_size: int | None = None,  # spatial side of the input
    in_channels: int | None = None,  # channels of the input
    num_classes: int | None = None,  # class-conditional labels (the null label is num_classes)
    batch: int | None = None,  # samples per step
    precision: str | None = None,  # fp32 | bf16 (autocast around the step; the target follows, target_precision auto)
    threads: int | None = None,  # torch CPU threads (None: leave as is)
    objectives: list[str] | None = None,  # default: every registered objective
    jvp_backends: bool = True,  # also meanflow with every other registered JVP backend
    official: bool = True,  # also the official alpha-Flow code's MeanFlow step
    compile: bool = False,  # also every case under torch.compile
    memory: bool = True,  # measure each case's peak step memory (one extra step each)
    rounds: int | None = None,  # round-robin rounds (default: the setting's, SETTING_SCHEDULE)
    block: int | None = None,  # timed steps per case per round
    warmup: int | None = None,  # untimed steps per case first
    total_steps: int = 1000,  # run length the schedules see; cases run at its middle (or end)
    seed: int = 0,
    peak_tflops_override: float | None = None,  # the device's dense bf16 peak, for MFU (default: by name)
    out: str | Path | None = None,  # JSON record path (written atomically)
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time every case interleaved and return (and optionally write) the JSON record; see the module doc."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; pick one of {', '.join(SETTINGS)}.")
    given = dict(device=device, backbone=backbone, input_size=input_size, in_channels=in_channels,
                 num_classes=num_classes, batch=batch, precision=precision, threads=threads)
    cfg = {**SETTINGS[setting], **{k: v for k, v in given.items() if v is not None}}
    schedule = SETTING_SCHEDULE[setting]
    rounds = schedule["rounds"] if rounds is None else rounds
    block = schedule["block"] if block is None else block
    warmup = schedule["warmup"] if warmup is None else warmup
    if cfg["precision"] not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, not {cfg['precision']!r}.")
    dev = torch.device(cfg["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --setting cpu.")
    names = list(objectives) if objectives is not None else OBJECTIVES.names()
    if BASELINE not in names:
        names.insert(0, BASELINE)
    previous_threads = torch.get_num_threads()
    if cfg["threads"] is not None:
        torch.set_num_threads(int(cfg["threads"]))
    try:
        record = _run(cfg, dev, names, jvp_backends, official, compile, memory, rounds, block, warmup,
                      total_steps, seed, progress)
        add_utilisation(record, peak_tflops_override)
        record["targets"] = SETTING_TARGETS[setting]
        record["summary"] = summarise(record["cases"], record["targets"])
    finally:
        torch.set_num_threads(previous_threads)
    if out is not None:
        atomic_write(out, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
        record["path"] = str(out)
    return record


def _run(cfg, dev, names, jvp_backends, official, compile, memory, rounds, block, warmup, total_steps, seed,
         progress) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    x = torch.randn(cfg["batch"], *shape, generator=gen).to(dev)
    y = torch.randint(0, cfg["num_classes"], (cfg["batch"],), generator=gen).to(dev)
    torch.manual_seed(seed)
    reference = create_backbone(cfg["backbone"], input_size=cfg["input_size"], in_channels=cfg["in_channels"],
                                num_classes=cfg["num_classes"]).to(dev)
    # Zero-initialised adaLN makes a fresh DiT output 0 whatever its input; a short random perturbation of
    # those layers makes the step's numbers (weights, adaptive weights, JVP) those of a trained-ish net.
    with torch.no_grad():
        for p in reference.parameters():
            if not p.any():
                p.normal_(0.0, 0.02, generator=torch.Generator(p.device).manual_seed(seed))

    def make_net() -> nn.Module:
        return copy.deepcopy(reference).train()

    bf16 = cfg["precision"] == "bf16"
    cases = default_cases(names, jvp_backends, official, compile, cuda=dev.type == "cuda", bf16=bf16)
    runners = [build_or_fail(c, make_net, x, y, total_steps, bf16) for c in cases]
    time_interleaved(runners, rounds, block, warmup, dev, progress)
    if memory:
        with native_output_filtered():  # the CPU measurement runs torch.profiler, whose native layer prints
            for runner in runners:
                if runner.error is None:
                    runner.peak_bytes = peak_step_bytes(lambda: runner.step_fn(20_000), dev)

    base = statistics.median(next(r for r in runners if r.case.label == BASELINE).times)
    rows = []
    for r in runners:
        med = statistics.median(r.times) if r.times else None
        rows.append({
            "label": r.case.label, "objective": r.case.objective, "overrides": r.case.overrides,
            "official_style": r.case.official, "compiled": r.case.compiled,
            "schedule_step": r.schedule_step, "alpha": r.alpha,
            "jvp": None if r.case.official else (r.case.overrides.get("jvp") if r.objective is None else r.objective.config.jvp),
            "median_ms": None if med is None else med * 1e3,
            "ratio_to_flow_matching": None if med is None else med / base,
            "images_per_s": None if med is None else cfg["batch"] / med,
            "peak_memory_mb": None if r.peak_bytes is None else r.peak_bytes / 2**20,
            "steps_timed": len(r.times),
            "min_ms": min(r.times) * 1e3 if r.times else None,
            "max_ms": max(r.times) * 1e3 if r.times else None,
            "error": r.error,
            "times_ms": [round(s * 1e3, 3) for s in r.times],
        })
    return {
        "schema": SCHEMA,
        "device": str(dev), "device_name": device_description(dev), "hardware": hardware(dev),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": {**cfg, "input_shape": list(shape), "rounds": rounds, "block": block, "warmup": warmup,
                   "total_steps": total_steps, "seed": seed, "compile": compile},
        "memory_measure": ("torch.cuda.max_memory_allocated above the step's start" if dev.type == "cuda" else
                           "peak live tensor bytes above the step's start, from torch.profiler allocation records"),
        "baseline": BASELINE, "flow_matching_median_ms": base * 1e3,
        "forward_flops_per_sample": forward_flops_per_sample(reference, shape, cfg["num_classes"]),
        "cases": rows,
        "summary": summarise(rows),
        "targets": TARGETS,
    }


def add_utilisation(record: dict, peak_override: float | None) -> None:
    """Model-FLOPs utilisation of the flow-matching step: 3 forwards' FLOPs (forward + backward = 2) x batch
    per median step time, over the device's dense bf16 peak (None on a CPU unless a peak is given)."""
    cfg = record["config"]
    flops = 3 * record["forward_flops_per_sample"] * cfg["batch"]
    achieved = flops / (record["flow_matching_median_ms"] / 1e3) / 1e12
    peak = peak_override or (peak_tflops(record["device_name"]) if record["device"].startswith("cuda") else None)
    record["utilisation"] = {"flow_matching_step_tflop": flops / 1e12, "achieved_tflops": achieved,
                             "peak_bf16_tflops": peak, "mfu": None if peak is None else achieved / peak}


def summarise(rows: list[dict], targets: dict = TARGETS) -> dict:
    """The issue's headline numbers: alpha > 0 and best-MeanFlow ratios, and best MeanFlow vs official."""
    ok = [r for r in rows if r["ratio_to_flow_matching"] is not None and not r["compiled"]]
    summary: dict[str, Any] = {}
    positive = [r for r in ok if r["objective"] == "alphaflow" and 0 < r["alpha"] < 1]
    if positive:
        summary["alpha_positive_ratio"] = positive[0]["ratio_to_flow_matching"]
        summary["alpha_positive_meets_target"] = positive[0]["ratio_to_flow_matching"] <= targets["alpha_positive_max_ratio"]
    ours = [r for r in ok if r["objective"] == "meanflow" and not r["official_style"]]
    if ours:
        best = min(ours, key=lambda r: r["median_ms"])
        summary["best_meanflow"] = best["label"]
        summary["best_meanflow_ratio"] = best["ratio_to_flow_matching"]
        summary["meanflow_meets_target"] = best["ratio_to_flow_matching"] <= targets["meanflow_max_ratio"]
        off = [r for r in ok if r["official_style"]]
        if off:
            summary["best_meanflow_vs_official"] = best["median_ms"] / off[0]["median_ms"]
            if "official_min_speedup" in targets:
                summary["official_speedup_meets_target"] = (
                    off[0]["median_ms"] / best["median_ms"] >= targets["official_min_speedup"])
    return summary


def spec_text(spec: Any) -> str:
    """A part's spec as table text: a name as is, a dict spec as name(key=value, ...) (TiM's JVP is one)."""
    if spec is None:
        return "-"
    if isinstance(spec, dict):
        rest = ", ".join(f"{k}={spec_text(v)}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name', '')}({rest})" if rest else str(spec.get("name", "{}"))
    return str(spec)


def perf_table(record: dict):
    """The record as a rich table (every cell a string: rich renders nothing else)."""
    from rich.markup import escape
    from rich.table import Table

    cfg = record["config"]
    table = Table(title=(f"Step cost vs flow matching: {cfg['backbone']} at {'x'.join(map(str, cfg['input_shape']))}, "
                         f"batch {cfg['batch']}, {cfg['precision']}, {record['device_name']} ({record['device']}), "
                         f"{record['threads']} thread(s), torch {record['torch']}"))
    for col, justify in (("case", "left"), ("alpha", "right"), ("jvp", "left"), ("median ms", "right"),
                         ("x FM", "right"), ("img/s", "right"), ("peak MB", "right"), ("steps", "right")):
        table.add_column(col, justify=justify)

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for r in record["cases"]:
        if r["error"]:
            table.add_row(escape(r["label"]), fmt(r["alpha"], ".3f"), escape(spec_text(r["jvp"])), "failed", "-", "-", "-",
                          escape(r["error"][:40]))
            continue
        jvp = "official" if r["official_style"] else spec_text(r["jvp"])
        table.add_row(escape(r["label"]), fmt(r["alpha"], ".3f"), escape(jvp), fmt(r["median_ms"], ".1f"),
                      fmt(r["ratio_to_flow_matching"], ".2f"), fmt(r["images_per_s"], ".0f"),
                      fmt(r["peak_memory_mb"], ".1f"), str(r["steps_timed"]))
    s, targets = record["summary"], record.get("targets", TARGETS)
    notes = []
    if "alpha_positive_ratio" in s:
        notes.append(f"alpha>0 step x{s['alpha_positive_ratio']:.2f} FM (target <= {targets['alpha_positive_max_ratio']})")
    if "best_meanflow_ratio" in s:
        notes.append(f"best MeanFlow ({escape(s['best_meanflow'])}) x{s['best_meanflow_ratio']:.2f} FM "
                     f"(target <= {targets['meanflow_max_ratio']})")
    if "best_meanflow_vs_official" in s:
        wanted = f" (target <= {1 / targets['official_min_speedup']:.2f})" if "official_min_speedup" in targets else ""
        notes.append(f"best MeanFlow / official-style x{s['best_meanflow_vs_official']:.2f}{wanted}")
    u = record.get("utilisation")
    if u:
        mfu = "" if u["mfu"] is None else f", MFU {100 * u['mfu']:.1f}% of {u['peak_bf16_tflops']:.0f}"
        notes.append(f"FM step {u['achieved_tflops']:.2f} TFLOP/s{mfu}")
    table.caption = "; ".join(notes)
    return table


# --------------------------------------------------------------------------------------------------
# CLI: the lead mounts this as `flowzoo bench perf` with bench_app.command("perf")(perf_command).
# --------------------------------------------------------------------------------------------------
def perf_command(
    setting: str = typer.Option("cpu", help="cpu (DiT-tiny/2, 4x16x16, batch 32, fp32, 1 thread), gpu "
                                            "(DiT-B/2, 4x32x32, batch 64, bf16, cuda) or tiny (2x4x4, batch 4, "
                                            "one timed step per case: a smoke test in seconds)."),
    device: Optional[str] = typer.Option(None, help="Override the setting's device (cpu, cuda, cuda:1)."),
    backbone: Optional[str] = typer.Option(None, help="Override the backbone, e.g. DiT-S/2."),
    input_size: Optional[int] = typer.Option(None, help="Override the input side."),
    in_channels: Optional[int] = typer.Option(None, help="Override the input channels."),
    batch: Optional[int] = typer.Option(None, help="Override the batch size."),
    precision: Optional[str] = typer.Option(None, help="fp32 or bf16 (autocast)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    peak_tflops: Optional[float] = typer.Option(None, help="The device's dense bf16 peak in TFLOP/s for the MFU "
                                                         "(default: looked up from the GPU's name)."),
    objective: Optional[list[str]] = typer.Option(None, help="Time only these objectives (repeatable)."),
    jvp_backends: bool = typer.Option(True, help="Also time meanflow with each JVP backend."),
    official: bool = typer.Option(True, help="Also time the official alpha-Flow code's MeanFlow step."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Also time every case under torch.compile (slow to start on CPU)."),
    memory: bool = typer.Option(True, help="Measure each case's peak step memory."),
    rounds: Optional[int] = typer.Option(None, help="Round-robin rounds (default: the setting's; cpu and gpu 12, tiny 1)."),
    block: Optional[int] = typer.Option(None, help="Timed steps per case per round (default: the setting's; 2, tiny 1)."),
    warmup: Optional[int] = typer.Option(None, help="Untimed steps per case first (default: the setting's; 2, tiny 1)."),
    out: Path = typer.Option(Path("runs/bench/perf.json"), help="Where the JSON record goes (atomically)."),
) -> None:
    """Each objective's training-step time and memory as a ratio to flow matching, interleaved in one process."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        record = run_perf(setting=setting, device=device, backbone=backbone, input_size=input_size,
                          in_channels=in_channels, batch=batch, precision=precision, threads=threads,
                          objectives=objective or None, jvp_backends=jvp_backends, official=official,
                          compile=compile, memory=memory, rounds=rounds, block=block, warmup=warmup, out=out,
                          peak_tflops_override=peak_tflops,
                          progress=lambda msg: console.log(msg))
    except (ValueError, RuntimeError, LookupError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    table_console = Console()
    if not table_console.is_terminal:  # piped or redirected (README tables, CI logs): whole labels, not "consisten…"
        table_console = Console(width=max(table_console.width, 160))
    table_console.print(perf_table(record))
    console.print(f"record written to {record['path']}")
