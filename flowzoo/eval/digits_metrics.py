"""Metrics for 8x8 digits, judged by the shipped digits classifier (flowzoo/assets/digits_classifier.*).

Keys of `DigitsMetrics()(generated, labels, dataset)`:
    fd             Frechet distance in the classifier's 64-d feature space between `num_fd_samples` (300)
                   generated samples and the TRAIN split's feature statistics (mean, covariance of 1,497).
                   FD from n samples is biased upward ~O(d/n), so n defaults to 300, the size of the
                   held-out set whose FD is the floor ("heldout/fd"). The held-out set is class-balanced
                   (30 per class), and random class proportions alone add several FD points, so sample
                   class-conditional models with `balanced_labels(300)` (30 per class) for comparable fd.
    class_acc      fraction of class-conditional samples classified as their conditioning label
                   (only when labels are given; null labels, == num_classes, are left out).
    class_entropy  entropy of the predicted-class histogram / log 10: 1 = all classes equally often.
    memorisation   median_i min_j |x_i - train_j| / the same median for held-out real digits (pixel L2).
                   About 1: as far from the training images as unseen real digits; << 1: copying them.
Samples are clipped to the data range [-1, 1] first, as they would be when saved as images.

`reference(dataset)` measures the same keys for reference sets:
    heldout/*      the 300 held-out real digits: the floor of fd, real accuracy, memorisation = 1.
    class_means/*  each class's mean training image, repeated 30x per class with its label: a degenerate
                   generator with near-perfect class_acc and a large fd (accuracy alone proves little).
    train/*        300 training images (30 per class) copied: memorisation 0 and an fd BELOW the held-out
                   floor, which is why fd against train statistics must be read with memorisation.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from flowzoo.data.stream import generator
from flowzoo.eval.base import Metric
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.registry import METRICS


def balanced_labels(n: int = 300, num_classes: int = 10) -> torch.Tensor:
    """Labels 0, 1, ..., 9, 0, 1, ... (n of them): class-balanced conditioning, like the held-out split."""
    return torch.arange(n) % num_classes


def feature_metrics(name: str, feats: torch.Tensor, pred: torch.Tensor, labels, reference_stats, memorisation: float,
                    *, num_fd_samples: int, seed: int, num_classes: int) -> dict[str, float]:
    """fd (a seeded subset of num_fd_samples features against reference_stats), class_acc on the conditioning
    labels, class_entropy of the predictions, and the given memorisation: what a classifier-feature metric
    (digits, Fashion-MNIST) reports, computed one way for both."""
    n_fd = min(num_fd_samples, len(feats))
    if n_fd < num_fd_samples:
        warnings.warn(f"{name}: {len(feats)} samples given but fd uses {num_fd_samples}; the fd is biased "
                      "upward and not comparable to the floor.", stacklevel=3)
    # A seeded subset, not the first n: samples are often ordered by class.
    fd_idx = torch.randperm(len(feats), generator=generator(seed))[:n_fd]
    out = {"fd": frechet_distance(*gaussian_stats(feats[fd_idx]), *reference_stats)}
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        conditional = labels < num_classes  # the null label means "unconditional"
        if conditional.any():
            out["class_acc"] = (pred[conditional] == labels[conditional]).float().mean().item()
    share = torch.bincount(pred, minlength=num_classes).double() / len(pred)
    out["class_entropy"] = (-(share * share.clamp_min(1e-12).log()).sum() / math.log(num_classes)).item()
    out["memorisation"] = memorisation
    return out


def nearest_distances(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """For each row of x, the L2 distance (flattened pixels) to its nearest row of bank."""
    return torch.cdist(x.flatten(1).double(), bank.flatten(1).double()).min(dim=1).values


@METRICS.register("digits")
class DigitsMetrics(Metric):
    """fd, class_acc, class_entropy, memorisation for 8x8 digits; see the module docstring."""

    name = "digits"

    def __init__(self, seed: int = 0, num_fd_samples: int = 300, classifier_path: str | Path | None = None):
        super().__init__(seed)
        self.num_fd_samples = num_fd_samples
        self.classifier_path = classifier_path  # None: the shipped flowzoo/assets/digits_classifier.safetensors
        self._cache: dict[str, object] = {}

    def supports(self, dataset) -> bool:
        return tuple(dataset.sample_shape) == (1, 8, 8) and hasattr(dataset, "train_tensors")

    def info(self, dataset) -> dict:
        """The protocol of these numbers, for result records: extractor weights and reference split hashes."""
        from flowzoo.data.digits import split_fingerprint
        from flowzoo.eval.digits_classifier import DEFAULT_PATH
        from flowzoo.eval.fid import sha256_file

        return {
            "implementation": "flowzoo.eval.digits_metrics (FD on classifier features, 1)",
            "extractor": "digits classifier (flowzoo prepare digits-classifier)",
            "extractor_weights_sha256": sha256_file(self.classifier_path or DEFAULT_PATH),
            "reference": "held-out split", "reference_sha256": split_fingerprint(),
            "num_samples": self.num_fd_samples, "labels": "class-balanced (i mod 10)",
        }

    # -- cached pieces ------------------------------------------------------------------------------
    @property
    def classifier(self):
        # Imported lazily: the classifier module (and safetensors) load only when digits are evaluated.
        from flowzoo.eval.digits_classifier import DEFAULT_PATH, load_digits_classifier

        return load_digits_classifier(self.classifier_path or DEFAULT_PATH)

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.classifier
        feats = net.features(x.clamp(-1, 1))
        return feats, net.head(feats)

    def _train_stats(self, dataset):
        if "train_stats" not in self._cache:
            train_x = dataset.train_tensors()[0]
            self._cache["train_stats"] = gaussian_stats(self.features_and_logits(train_x)[0])
            held_nn = nearest_distances(dataset.heldout_tensors()[0], train_x)
            self._cache["heldout_nn_median"] = held_nn.median().item()
        return self._cache["train_stats"], self._cache["heldout_nn_median"]

    # -- the metric ---------------------------------------------------------------------------------
    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        x = self._check_shape(generated, dataset).clamp(-1, 1)
        (mu_train, cov_train), heldout_nn = self._train_stats(dataset)
        feats, logits = self.features_and_logits(x)
        pred = logits.argmax(dim=1)

        gen_nn = nearest_distances(x, dataset.train_tensors()[0]).median().item()
        return feature_metrics("digits", feats, pred, labels, (mu_train, cov_train), gen_nn / heldout_nn,
                               num_fd_samples=self.num_fd_samples, seed=self.seed, num_classes=dataset.num_classes)

    def reference(self, dataset) -> dict[str, float]:
        """heldout/*, class_means/*, train/* measured exactly as generated samples are."""
        n = self.num_fd_samples
        held_x, held_y = dataset.reference(min(n, len(dataset.heldout_tensors()[0])), self.seed)
        # Balanced labels, as in the held-out split (30 per class for n = 300).
        want = balanced_labels(n, dataset.num_classes)
        train_x, train_y = dataset.train_tensors()
        gen = generator(self.seed)
        train_idx = torch.cat([
            torch.nonzero(train_y == c).squeeze(1)[torch.randperm(int((train_y == c).sum()), generator=gen)]
            [:int((want == c).sum())] for c in range(dataset.num_classes)
        ])
        sets = {
            "heldout": (held_x, held_y),
            "class_means": (dataset.class_means()[want], want),
            "train": (train_x[train_idx], train_y[train_idx]),
        }
        return {f"{name}/{k}": v for name, (x, y) in sets.items() for k, v in self(x, y, dataset).items()}
