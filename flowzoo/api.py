"""The Python API: `flowzoo run`, `sample` and `eval` as calls, through the functions the CLI calls.

    import flowzoo
    run = flowzoo.run({"objective": "meanflow", "data": "digits", "train": {"steps": 500}}, out="runs/api")
    run = flowzoo.load_run("runs/api")                 # later: the run directory (or one of its checkpoints)
    x, labels = run.sample(nfe=2, labels=[3, 3, 7])    # three samples, of classes 3, 3 and 7
    run.evaluate(nfe=[1, 2])                           # every metric that supports the data, per NFE

``flowzoo.run`` resolves the config as `flowzoo run` does (configs/ layers, then the mapping as an
experiment file, then ``sets`` and the keyword flags) and calls the same ``run_experiment``; ``load_run``
rebuilds the network from the run directory as `flowzoo sample` does (registered names only,
weights-only loading), and samples and metrics come from the same ``generate`` and ``evaluate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from flowzoo.config import ConfigError


class Run:
    """A run directory loaded back: ``net`` (EMA weights by default, in eval mode), ``dataset``, ``config``
    (its resolved config.yaml), ``step`` (of the checkpoint) and ``result`` (result.json, when written)."""

    def __init__(self, path: Path, checkpoint: Path, net: torch.nn.Module, dataset, config: dict[str, Any], step: int):
        self.path, self.checkpoint, self.net, self.dataset, self.config, self.step = (
            path, checkpoint, net, dataset, config, step)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, objective={self.config['objective']['name']!r}, "
                f"data={self.config['data']['name']!r}, step={self.step})")

    @property
    def result(self) -> dict[str, Any] | None:
        """result.json: metrics keyed "sampler@nfe", their reference points and provenance (None before evaluation)."""
        path = self.path / "result.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @property
    def sampler(self) -> str:
        """The objective's own sampler (what `flowzoo sample` uses by default)."""
        from flowzoo.pipeline.sample import _sampler_for

        return _sampler_for(self.config, None)

    def to(self, device: str | torch.device) -> "Run":
        self.net.to(device)
        return self

    @torch.no_grad()
    def sample(self, nfe: int = 1, num_samples: int | None = None, labels: Sequence[int] | torch.Tensor | None = None,
               *, sampler: str | None = None, seed: int = 0, guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(samples (N, *dataset.sample_shape), labels or None) at ``nfe`` network evaluations.

        ``labels``: one class per sample (N = len(labels)); without them, ``num_samples`` (default 100)
        with class-balanced labels (sample i of class i mod classes) on class-conditional data. Sample i
        depends only on (seed, i), as in `flowzoo sample`. ``labels`` may use the null class
        (``dataset.num_classes``) for unconditional samples of a CFG-trained model."""
        from flowzoo.pipeline.evaluate import eval_mode, generate

        classes = self.dataset.num_classes
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
            if classes == 0:
                raise ValueError(f"{self.dataset.name} is unconditional; sample it without labels.")
            if len(labels) == 0 or labels.min() < 0 or labels.max() > classes:
                raise ValueError(f"labels must lie in 0..{classes - 1} ({classes} is the null label), one per sample.")
            if num_samples is not None and num_samples != len(labels):
                raise ValueError(f"num_samples={num_samples} but {len(labels)} labels; give one of them.")
            num_samples = len(labels)
        num_samples = 100 if num_samples is None else int(num_samples)
        if num_samples < 1 or int(nfe) < 1:
            raise ValueError("nfe and num_samples must be at least 1.")
        with eval_mode(self.net) as net:
            return generate(net, self.dataset, self._sampler(sampler), int(nfe), num_samples, seed, guidance,
                            labels=labels)

    def evaluate(self, nfe: int | Iterable[int] = (1, 2), num_samples: int | None = None, *,
                 sampler: str | None = None, seed: int = 0) -> dict[str, Any]:
        """Every metric that supports the data, at each NFE: {"results": {"sampler@nfe": {metric: value}},
        "reference": {...}} as in result.json. ``num_samples`` defaults to the run's eval.num_samples."""
        from flowzoo.pipeline.evaluate import evaluate

        nfes = [int(nfe)] if isinstance(nfe, int) else [int(n) for n in nfe]
        n = num_samples or int((self.config.get("eval") or {}).get("num_samples", 300))
        return evaluate(self.net, self.dataset, {self._sampler(sampler): nfes}, num_samples=n, seed=seed)

    def save_figure(self, x: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
        """The figure `flowzoo sample` writes (a grid, a scatter against the data, or video strips) as a PNG."""
        from flowzoo.pipeline.evaluate import write_samples_figure

        return write_samples_figure(x, self.dataset, Path(path), labels=labels)

    def _sampler(self, sampler: str | None) -> str:
        from flowzoo.pipeline.sample import _sampler_for

        return _sampler_for(self.config, sampler)


def load_run(path: str | Path, ema: int = 0, device: str | torch.device = "cpu") -> Run:
    """A run directory (its checkpoints/latest.pt) or one checkpoint of it, loaded as `flowzoo sample` loads it.

    ``ema``: which EMA's weights (index into train.ema_halflives), -1 for the raw weights."""
    from flowzoo.pipeline.sample import load_run as load_checkpoint_run

    path = Path(path)
    checkpoint = path / "checkpoints" / "latest.pt" if path.is_dir() else path
    if path.is_dir() and not checkpoint.is_file():
        raise ConfigError(f"{path} holds no checkpoints/latest.pt; is it a flowzoo run directory whose training "
                          f"reached its first checkpoint?")
    net, dataset, cfg, ckpt = load_checkpoint_run(checkpoint, ema)
    return Run(checkpoint.resolve().parent.parent, checkpoint, net.to(device), dataset, cfg, int(ckpt["step"]))


def run(config: Mapping[str, Any] | str | Path | None = None, *, objective: str | None = None,
        schedule: str | None = None, backbone: str | None = None, data: str | None = None, steps: int | None = None,
        batch_size: int | None = None, seed: int | None = None, out: str | Path | None = None,
        sets: Sequence[str] = (), quiet: bool = True) -> Run | None:
    """Train and evaluate as `flowzoo run` does; returns the finished run loaded back (None on ranks other
    than 0 under torchrun). Running it again on the same ``out`` resumes, as the command does.

    ``config``: an experiment as a mapping (sections objective, backbone, data, train, eval, seed, out; a
    part may be a bare name) or a YAML file's path; the keywords are the command's flags, ``sets`` its
    ``--set key=value`` strings. ``quiet=False`` shows the progress bar and the results table."""
    from rich.console import Console

    from flowzoo.config import resolve
    from flowzoo.data import parse_data_name
    from flowzoo.pipeline.run import default_out, run_experiment

    is_file = isinstance(config, (str, Path))
    cfg = resolve(objective=objective, schedule=schedule, backbone=backbone, data=data,
                  config_file=str(config) if is_file else None, config=None if is_file or config is None else dict(config),
                  sets=list(sets), flags={"train.steps": steps, "train.batch_size": batch_size, "seed": seed,
                                          "out": str(out) if out is not None else None})
    if cfg.get("out") is None:  # where run_experiment would put it, named here so the run can be loaded back
        cfg["out"] = str(default_out({**cfg, "data": {**cfg["data"], "name": parse_data_name(cfg["data"]["name"])}},
                                     schedule))
    record = run_experiment(cfg, schedule_name=schedule, quiet=quiet, console=Console(quiet=quiet))
    return None if record is None else load_run(cfg["out"])
