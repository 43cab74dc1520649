"""Training: the loop, its options, EMA, crash-safe checkpoints, torchrun/DDP and progress display.

    from flowzoo.train import TrainOptions, train
    state = train(TrainOptions(out_dir="runs/x", steps=1000, batch_size=64), net, objective, dataset)

Rerunning the same call resumes from ``out_dir/checkpoints/latest.pt``.
"""

from flowzoo.train.checkpoint import CheckpointError, load_checkpoint
from flowzoo.train.ema import EMA, ema_beta
from flowzoo.train.loop import Hook, TrainingDiverged, learning_rate, mix_seed, train
from flowzoo.train.options import TrainOptions
from flowzoo.train.progress import TrainProgress
from flowzoo.train.state import TrainState

__all__ = [
    "CheckpointError", "EMA", "Hook", "TrainOptions", "TrainProgress", "TrainState", "TrainingDiverged",
    "ema_beta", "learning_rate", "load_checkpoint", "mix_seed", "train",
]
