"""Weights & Biases: one W&B run per run directory, continued when the run resumes.

The W&B run id is kept in RUN/wandb_run_id.txt (written before the W&B run starts), so running the same
command again continues the same W&B run (``resume="allow"``). W&B's local files go to RUN/wandb/ unless
WANDB_DIR says otherwise; WANDB_MODE=offline works without a network (``wandb sync`` uploads later).
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any, Mapping

from flowzoo.registry import LOGGERS

RUN_ID_FILE = "wandb_run_id.txt"


def run_id(run_dir: Path) -> str:
    """The run directory's W&B run id: the one kept there, else a new one, kept there first."""
    from flowzoo.atomic import atomic_write_text

    path = run_dir / RUN_ID_FILE
    if path.is_file():
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new + "\n")
    return new


class WandbLogger:
    """Scalars, sample grids (wandb.Image) and the resolved config (the W&B run's config)."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any] | None, init_args: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ImportError("the wandb logger needs the wandb package: pip install 'flowzoo[wandb]'") from None
        self.wandb = wandb
        args = {"project": "flowzoo", "name": run_dir.name, **init_args}
        if not os.environ.get("WANDB_DIR"):
            args.setdefault("dir", str(run_dir))
        self.run = wandb.init(id=run_id(run_dir), resume="allow", config=dict(config or {}), **args)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_image(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(path))}, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


@LOGGERS.register("wandb")
def wandb(run_dir, config=None, resume_step: int = 0, **init_args: Any) -> WandbLogger:
    """Weights & Biases (needs the wandb package: flowzoo's wandb extra); other keys (project, entity, tags, mode, ...) go to wandb.init."""
    return WandbLogger(Path(run_dir), config, init_args)
