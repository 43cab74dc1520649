"""TensorBoard: event files in the run directory, so ``tensorboard --logdir runs`` lists every run by its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flowzoo.registry import LOGGERS


class TensorBoardLogger:
    """Scalars, sample grids and the resolved config through ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any] | None, resume_step: int, flush_secs: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("the tensorboard logger needs the tensorboard package: "
                              "pip install 'flowzoo[tensorboard]'") from None
        # purge_step: TensorBoard hides what a killed run logged after the checkpoint this run resumes from.
        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step + 1 if resume_step else None,
                                    flush_secs=flush_secs)
        if config is not None:
            from flowzoo import yaml_io

            text = yaml_io.dump(dict(config), sort_keys=False)
            self.writer.add_text("config", "".join("    " + line + "\n" for line in text.splitlines()), resume_step)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self, failed: bool = False) -> None:
        self.writer.close()


@LOGGERS.register("tensorboard")
def tensorboard(run_dir, config=None, resume_step: int = 0, flush_secs: int = 30) -> TensorBoardLogger:
    """TensorBoard event files in the run directory (needs the tensorboard package: flowzoo's tensorboard extra)."""
    return TensorBoardLogger(Path(run_dir), config, int(resume_step), int(flush_secs))
