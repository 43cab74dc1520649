"""Evaluation metrics, registered in METRICS: "toy2d" (2-D toys), "digits" (8x8 digits), "fashion_mnist"
(Fashion-MNIST at 32x32), "imagenet_fid", "fd_dinov2", "fvd" (video).

Contract (see base.py): `metric = create_metric(name, seed=0, ...)`;
`metric(generated, labels, dataset) -> dict[str, float]`; `metric.reference(dataset) -> dict[str, float]`
with keys "<reference set>/<key>" (the noise floor and other reference points, measured the same way).
"""

from __future__ import annotations

from flowzoo.eval.base import Metric
from flowzoo.eval.fid import ImageNetFID  # registers imagenet_fid
from flowzoo.eval.fd_dinov2 import FDDINOv2  # registers fd_dinov2
from flowzoo.eval.fvd import FVD  # registers fvd
from flowzoo.eval.digits_metrics import DigitsMetrics, balanced_labels, nearest_distances
from flowzoo.eval.fashion_metrics import FashionMetrics  # registers fashion_mnist
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.eval.plots import save_image_grid, save_toy_scatter
from flowzoo.eval.toy_metrics import ToyMetrics, mmd_rbf, mode_coverage, sliced_wasserstein
from flowzoo.registry import METRICS

__all__ = [
    "Metric", "ToyMetrics", "DigitsMetrics", "FashionMetrics", "ImageNetFID", "FDDINOv2", "FVD", "create_metric",
    "metrics_for", "sliced_wasserstein", "mmd_rbf",
    "mode_coverage", "frechet_distance", "gaussian_stats", "nearest_distances", "balanced_labels", "DigitsClassifier",
    "load_digits_classifier", "train_digits_classifier", "save_image_grid", "save_toy_scatter",
]


def __getattr__(name: str):
    # Lazy: the classifier module loads only when a digits metric needs it.
    if name in ("DigitsClassifier", "load_digits_classifier", "train_digits_classifier"):
        from flowzoo.eval import digits_classifier

        return getattr(digits_classifier, name)
    raise AttributeError(f"module 'flowzoo.eval' has no attribute {name!r}")


def create_metric(name: str, **kwargs) -> Metric:
    """The metric registered as `name`, constructed with kwargs (e.g. seed=0)."""
    return METRICS.get(name)(**kwargs)


def metrics_for(dataset, **kwargs) -> dict[str, Metric]:
    """Every registered metric that supports `dataset`, by name, each constructed with kwargs."""
    found = {}
    for name in METRICS.names():
        metric = METRICS.get(name)(**kwargs)
        if metric.supports(dataset):
            found[name] = metric
    return found
