"""`flowzoo run`: a resolved config -> a run directory with a trained model and its evaluation.

    OUT/config.yaml        the resolved config (what to pass to --config to run it again)
    OUT/metrics.jsonl      training metrics, one line per log step
    OUT/checkpoints/       latest.pt and periodic step-XXXXXXXX.pt (re-running the command resumes)
    OUT/samples/           PNG grids (or toy scatter plots) during training and at 1 and 2 NFE
    OUT/result.json        metrics keyed by "sampler@nfe", reference points, provenance
    OUT/events.out.tfevents.*, OUT/wandb/ ...  what train.loggers writes (flowzoo/loggers/): metrics.jsonl's lines,
                           the evaluations, the sample figures and this config
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from flowzoo import atomic, run_lock, yaml_io
from flowzoo.backbones import create_backbone
from flowzoo.config import ConfigError, build_dataclass, config_hash, load_yaml
from flowzoo.data import dataset_from_config, parse_data_name
from flowzoo.eval import metrics_for
from flowzoo.eval.plots import figure_title
from flowzoo.jsonl import append_line, read_by_step
from flowzoo.loggers import Trackers
from flowzoo.objectives import create_objective
from flowzoo.pipeline.evaluate import eval_mode, evaluate, generate, measure, results_table, write_samples_figure
from flowzoo.pipeline.evaluate import MetricsNotFinite, nonfinite_metrics  # noqa: F401 (here since issue 26)
from flowzoo.pipeline.divergence import DivergenceAlarm
from flowzoo.pipeline.provenance import plugins_used, provenance
from flowzoo.atomic import atomic_write_text, write_json
from flowzoo.backbones.prediction import DEFAULT_T_MIN, PREDICTIONS, apply_prediction
from flowzoo.registry import BACKBONES, OBJECTIVES, SAMPLERS
from flowzoo.train import TrainingDiverged, TrainOptions, distributed, train
from flowzoo.train.checkpoint import find_latest


@dataclass
class EvalOptions:
    samplers: dict | None = None  # {sampler: [nfe, ...]}; None: the objective's own sampler at 1 and 2 NFE
    num_samples: int = 300  # samples per (sampler, NFE); metrics compare against floors of the same size
    guidance: float = 1.0  # test-time CFG scale (1 = none)
    previews: bool = True  # write 1- and 2-NFE sample figures every train.sample_every steps
    curve: bool = False  # also measure the metrics at 1 NFE every train.sample_every steps (eval_curve.jsonl)


def default_out(cfg: dict[str, Any], schedule_name: str | None) -> Path:
    parts = [cfg["objective"]["name"]] + ([schedule_name] if schedule_name else [])
    parts += [cfg["data"]["name"].replace(":", "-"), f"s{cfg['seed']}"]
    return Path("runs") / "-".join(parts)


def build_network(spec: dict[str, Any], dataset, seed: int, *, trusted: bool = True) -> torch.nn.Module:
    """The backbone sized for the dataset: sample_shape for MLPs, input_size/in_channels (+ num_frames) for (video) DiTs.

    ``trusted=False`` for a spec read from a run directory (data): a registered backbone only, never an import path."""
    args = {k: v for k, v in spec.items() if k not in ("name", "prediction", "prediction_t_min")}
    prediction = spec.get("prediction", "u")  # what the raw output means (backbones/prediction.py)
    if prediction not in PREDICTIONS:
        raise ConfigError(f"backbone.prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}.")
    t_min = spec.get("prediction_t_min", DEFAULT_T_MIN)  # x-prediction's floor on t in u = (z - x^) / t
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not t_min > 0:
        raise ConfigError(f"backbone.prediction_t_min must be a positive number, not {t_min!r}.")
    factory = BACKBONES.get(spec["name"], trusted=trusted)
    params = inspect.signature(factory).parameters
    shape = tuple(dataset.sample_shape)
    if "sample_shape" in params:
        args.setdefault("sample_shape", shape)
    elif "num_frames" in params:  # video DiTs: (C, F, H, W) clips or latent clips
        if len(shape) != 4:
            raise ConfigError(f"backbone '{spec['name']}' takes video clips but {dataset.name} samples have shape {shape}; use a DiT-* backbone.")
        args.setdefault("in_channels", shape[0])
        args.setdefault("num_frames", shape[1])
        args.setdefault("input_size", shape[-1] if shape[-1] == shape[-2] else list(shape[-2:]))
    elif "input_size" in params:
        if len(shape) != 3:
            hint = "a VideoDiT-* backbone" if len(shape) == 4 else "--backbone mlp"
            raise ConfigError(f"backbone '{spec['name']}' takes images but {dataset.name} samples have shape {shape}; use {hint}.")
        args.setdefault("in_channels", shape[0])
        args.setdefault("input_size", shape[-1])
    args.setdefault("num_classes", dataset.num_classes)
    torch.manual_seed(seed)  # the initial weights depend on the seed only
    return apply_prediction(create_backbone(spec["name"], trusted=trusted, **args), prediction, t_min)


def check_out_folder(out: Path) -> None:
    """One sentence, before anything is built, when --out cannot be a folder: it (or a folder above it) is a
    file, or a symbolic link that leads nowhere (a loop or a missing target)."""
    for path in (out, *out.parents):
        if path.is_symlink() and not path.exists():
            raise ConfigError(f"--out {out}: {path} is a symbolic link that leads nowhere (a loop or a missing "
                              f"target); pass another folder.")
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {out}: {path} is a file, not a folder; pass another --out.")
            return


def holds_outputs(out: Path) -> bool:
    """Whether a run directory holds anything training made. A run that failed before its first step
    (a bad lr, no memory for the batch) leaves only config.yaml, the lock file and an empty metrics.jsonl:
    that is not a run, and a corrected command may take the folder."""
    for path in out.rglob("*"):
        if path.is_dir() or atomic.is_temp(path) or (path.parent == out
                                                     and path.name in ("config.yaml", run_lock.LOCK_NAME)):
            continue
        if path == out / "metrics.jsonl" and not path.read_bytes().strip():
            continue
        return True
    return False


def check_run_dir(out: Path, cfg: dict[str, Any]) -> None:
    """Refuse to resume a run directory that holds a different experiment (its checkpoints are the user's)."""
    saved = out / "config.yaml"
    if saved.is_file():
        previous = load_yaml(saved)  # a torn config.yaml is one sentence, not a traceback
        if config_hash(previous) != config_hash(cfg) and holds_outputs(out):
            raise ConfigError(
                f"{out} holds a run with a different config (see {saved}); pass a different --out to start a new run."
            )


def finished_training_step(out: Path, steps: int) -> int | None:
    """The step a run directory's training already reached, when that is `steps` or more (else None):
    a checkpoint is there and metrics.jsonl logged the last step, so the loop will only re-evaluate."""
    if find_latest(out) is None:
        return None
    logged = read_by_step(out / "metrics.jsonl")
    last = int(logged[-1]["step"]) if logged else 0
    return last if last >= steps else None


def run_experiment(cfg: dict[str, Any], *, schedule_name: str | None = None, quiet: bool = False,
                   console: Console | None = None) -> dict[str, Any] | None:
    console = console or Console()
    cfg = dict(cfg)
    cfg["data"] = {**cfg["data"], "name": parse_data_name(cfg["data"]["name"])}
    out = Path(cfg.get("out") or default_out(cfg, schedule_name))
    check_out_folder(out)
    cfg["out"] = str(out)
    seed = int(cfg["seed"])

    dataset = dataset_from_config(cfg["data"])
    train_values = {**cfg.get("train", {}), "out_dir": str(out), "seed": seed}
    if quiet:
        train_values["quiet"] = True
    options = build_dataclass(TrainOptions, train_values, "train")
    options.per_rank(distributed.launched_world_size())  # batch_size / batch_per_device that do not split: say so now
    eval_options = build_dataclass(EvalOptions, dict(cfg.get("eval", {})), "eval")
    objective_spec = dict(cfg["objective"])
    objective_name = objective_spec.pop("name")
    builder = OBJECTIVES.get(objective_name)
    samplers = eval_options.samplers or {getattr(builder, "default_sampler", "meanflow"): [1, 2]}
    for name in samplers:
        SAMPLERS.get(name)

    net = build_network(cfg["backbone"], dataset, seed)
    objective = create_objective(objective_name, net, total_steps=options.steps, **objective_spec)
    trackers = Trackers(options.loggers, out, config=cfg, enabled=run_lock.is_main_process())  # names checked now
    check_run_dir(out, cfg)
    done = finished_training_step(out, options.steps)
    if done is not None and run_lock.is_main_process():
        console.print(f"{out} already finished training at step {done}; re-evaluating its checkpoint "
                      "(use --out to start a new run).", soft_wrap=True)
    for metric in metrics_for(dataset, seed=seed).values():  # e.g. FVD without its I3D file: say so before training
        if hasattr(metric, "check"):
            metric.check(dataset)
    # One `flowzoo run` per run directory (rank 0 holds it for all ranks of a torchrun job); check the
    # config again under the lock, since a concurrent run may have written config.yaml meanwhile.
    with run_lock.hold(out) if run_lock.is_main_process() else contextlib.nullcontext(), trackers:
        check_run_dir(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml_io.dump(cfg, sort_keys=False))

        preview_sampler = next(iter(samplers))
        hooks = [PreviewHook(dataset, preview_sampler, out / "samples", seed, objective=objective_name,
                             trackers=trackers)] if eval_options.previews else []
        if eval_options.curve:
            hooks.append(CurveHook(dataset, preview_sampler, out / CURVE_FILE, eval_options.num_samples, seed,
                                   trackers=trackers))
        state = train(options, net, objective, dataset, hooks=hooks, trackers=trackers)  # builds this rank's stream
        if not state.is_main:
            return None

        evaluation = evaluate(state.ema_net, dataset, samplers, num_samples=eval_options.num_samples, seed=seed,
                              samples_dir=out / "samples", guidance=eval_options.guidance,
                              objective=objective_name, step=state.step)
        log_evaluation(trackers, evaluation, out / "samples", state.step)
        not_finite = nonfinite_metrics(evaluation)
        if not_finite:  # NaN must not reach the leaderboard as a result; the run's other files stay
            console.print(results_table(f"{objective_name} on {cfg['data']['name']} (not finite)", evaluation["results"],
                                        evaluation["reference"]))
            skipped = f"; {state.skipped_steps} of {state.step} training steps were not finite and were skipped" \
                if state.skipped_steps else ""
            raise MetricsNotFinite(
                f"the final metrics of {out} are not finite ({', '.join(not_finite[:4])}"
                f"{', ...' if len(not_finite) > 4 else ''}{skipped}), so no result.json was written (its checkpoints "
                f"and metrics.jsonl are kept): lower train.lr or check the data, then run again with a new --out.")
        record = {
            "objective": objective_name,
            "schedule": schedule_name,
            "data": cfg["data"]["name"],
            "backbone": cfg["backbone"]["name"],
            "sampled_from": "ema[0]" if state.emas else "raw",
            **evaluation,
            "provenance": {**provenance(cfg, state), "plugins": plugins_used(cfg, samplers)},
        }
        write_json(out / "result.json", record)
        print_summary(console, record, out)
        return record


def log_evaluation(trackers: Trackers, evaluation: dict[str, Any], samples_dir: Path, step: int) -> None:
    """An evaluation to the run's trackers: eval/SAMPLER@NFE/METRIC, reference/SET/METRIC and the figures
    (eval/SAMPLER@NFE/samples; the previews during training are samples/SAMPLER@NFE)."""
    for key, row in evaluation["results"].items():
        trackers.log_metrics(row, step, prefix=f"eval/{key}/")
    trackers.log_metrics(evaluation.get("reference", {}), step, prefix="reference/")
    trackers.log_images({f"eval/{key}/samples": samples_dir / f"{key.replace('@', '-nfe')}.png"
                         for key in evaluation["results"]}, step)


class PreviewHook:
    """Every train.sample_every steps: a 1-NFE and a 2-NFE sample figure from the EMA network."""

    def __init__(self, dataset, sampler: str, directory: Path, seed: int, num_samples: int = 100,
                 objective: str | None = None, trackers: Trackers | None = None):
        self.dataset, self.sampler, self.directory, self.seed = dataset, sampler, Path(directory), seed
        self.objective, self.trackers = objective, trackers
        # toys: a scatter wants many points; video: the figure shows 8 clips, each costs 100s of tokens
        self.num_samples = {1: 1000, 4: 8}.get(len(dataset.sample_shape), num_samples)

    def __call__(self, step: int, state) -> None:
        if not state.is_main:
            return
        with eval_mode(state.ema_net) as net:
            for nfe in (1, 2):
                x, labels = generate(net, self.dataset, self.sampler, nfe, self.num_samples, self.seed)
                title = figure_title(self.objective, self.sampler, nfe, step, self.seed)
                path = write_samples_figure(x, self.dataset, self.directory / f"step-{step:08d}-nfe{nfe}.png",
                                            self.seed, title, labels)
                if self.trackers is not None:
                    self.trackers.log_images({f"samples/{self.sampler}@{nfe}": path}, step)


CURVE_FILE = "eval_curve.jsonl"


class CurveHook:
    """Metric vs training compute: 1-NFE metrics of the EMA network every train.sample_every steps.

    One JSON line per evaluation with the step, images seen and training wall time at that point, so a
    leaderboard can plot quality against any of the three compute axes. A resumed run appends; readers
    keep the last line per step.
    """

    def __init__(self, dataset, sampler: str, path: Path, num_samples: int, seed: int, trackers: Trackers | None = None):
        self.dataset, self.sampler, self.path, self.trackers = dataset, sampler, Path(path), trackers
        self.num_samples, self.seed = num_samples, seed
        self.metrics = metrics_for(dataset, seed=seed)  # built once: no reference floors recomputed per call
        self.alarm = DivergenceAlarm()
        for line in read_by_step(self.path) if self.path.is_file() else []:  # a resumed run keeps its best point
            self.alarm.update(int(line["step"]), line.get("metrics", {}))

    @torch.no_grad()
    def __call__(self, step: int, state) -> None:
        if not state.is_main:
            return
        with eval_mode(state.ema_net) as net:
            x, labels = generate(net, self.dataset, self.sampler, 1, self.num_samples, self.seed)
        line = {"step": step, "images_seen": state.images_seen, "wall_time_s": round(state.wall_time, 2),
                "sampler": self.sampler, "nfe": 1, "metrics": measure(self.metrics, x, labels, self.dataset)}
        alarm = self.alarm.update(step, line["metrics"])
        if alarm:
            line["alarm"] = alarm
            Console(stderr=True).print(f"[yellow]{alarm}[/yellow]")
        append_line(self.path, line)
        if self.trackers is not None:
            self.trackers.log_metrics(line["metrics"], step, prefix=f"eval/{self.sampler}@1/")


def print_summary(console: Console, record: dict[str, Any], out: Path) -> None:
    title = f"{record['objective']} on {record['data']} ({record['provenance']['steps']} steps)"
    console.print(results_table(title, record["results"], record["reference"]))
    console.print(f"wrote {out / 'result.json'}")
