"""Metrics for Fashion-MNIST at 32x32, judged by the shipped Fashion-MNIST classifier
(flowzoo/assets/fashion_classifier.*, trained on the train split only; see fashion_classifier.py).

Keys of `FashionMetrics()(generated, labels, dataset)`, as digits' (flowzoo/eval/digits_metrics.py):
    fd             Frechet distance in the classifier's 64-d feature space between `num_fd_samples`
                   (NUM_SAMPLES) generated samples and the REFERENCE statistics: the t10k (held-out) images
                   outside the floor set, 10,000 - n of them, class-balanced. FD from n samples is biased
                   upward ~O(d/n), so the floor ("heldout/fd") is measured at the same n; sample
                   class-conditional models with balanced labels (i mod 10), as evaluation does.
    class_acc      fraction of class-conditional samples classified as their conditioning label
                   (only when labels are given; null labels, == num_classes, are left out).
    class_entropy  entropy of the predicted-class histogram / log 10: 1 = all classes equally often.
    memorisation   median_i min_j |x_i - train_j| / the same median for the floor set's held-out images
                   (pixel L2 at 32x32, against all 60,000 training images: no subsample). About 1: as far
                   from the training images as unseen real images; << 1: copying them.
Samples are clipped to the data range [-1, 1] first, as they would be when saved as images.

Why held-out reference statistics, where digits uses the train split's: digits has 300 held-out images,
too few for a 64-d covariance; Fashion-MNIST has 10,000. Against unseen images, FD measures the distance to
the data distribution rather than to the training set, and a generator that copies its training images
scores about the floor, not below it (see the train/* row).

The floor set: n t10k images, n/10 per class, drawn once with a fixed seed (not the run's), so every run,
seed and method is compared with the same reference statistics and the same floor. It is disjoint from
the reference, as samples are. At most half of each class goes to the floor (stand-in data sets are tiny).

`reference(dataset)` measures the same keys for reference sets, each of the floor set's size:
    heldout/*      the floor set: the floor of fd, real accuracy, memorisation = 1.
    class_means/*  each class's mean training image, repeated n/10 times with its label: a degenerate
                   generator with a huge fd. Its class_acc is only ~0.6 (digits': ~1), as the blurred means
                   of shirts, pullovers and coats look alike, but still far above what its fd deserves.
    train/*        n training images (n/10 per class) copied: memorisation 0, fd about the floor.

Sharded evaluation: each rank summarises its share to features, predictions and nearest-train distances
(no images travel), and `finish` computes the numbers from them, equal to one process's.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from flowzoo.data.fashion_mnist import to_model_space
from flowzoo.data.stream import REFERENCE, generator
from flowzoo.eval.base import Metric
from flowzoo.eval.digits_metrics import balanced_labels, feature_metrics
from flowzoo.eval.frechet import gaussian_stats
from flowzoo.registry import METRICS

NUM_SAMPLES = 2000  # = eval.num_samples in configs/data/fashion_mnist.yaml; see its comment for why
FLOOR_SPLIT_SEED = 0  # the floor/reference split of t10k: fixed, so all runs share one reference
BATCH = 500  # images per classifier forward and per block of nearest-neighbour distances


def nearest_train_distances(x: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
    """For each image of x, the pixel L2 distance to its nearest row of `bank` (flattened float32 images;
    bank_sq their squared norms), in float64.

    The nearest row is found with |a|^2 + |b|^2 - 2ab in float32 matrix products (2x faster than float64 and
    4x faster than cdist here), then its distance is recomputed exactly, so a copied image gives exactly 0.
    A float32 near-tie (within ~1e-5 of a distance of ~7) may pick the other image of the tie; the distance
    reported then differs from the true minimum by about as little."""
    x = x.flatten(1).float()
    out = []
    for block in x.split(BATCH):
        d2 = (block * block).sum(1, keepdim=True) + bank_sq[None, :] - 2 * block @ bank.T
        nearest = bank[d2.argmin(dim=1)]
        out.append((block.double() - nearest.double()).norm(dim=1))
    return torch.cat(out)


def balanced_subset(labels: torch.Tensor, counts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Indices of `counts[c]` random items of each class c, class by class, from one generator."""
    return torch.cat([
        torch.nonzero(labels == c).squeeze(1)[torch.randperm(int((labels == c).sum()), generator=gen)][:int(k)]
        for c, k in enumerate(counts)
    ])


@METRICS.register("fashion_mnist")
class FashionMetrics(Metric):
    """fd, class_acc, class_entropy, memorisation for Fashion-MNIST; see the module docstring."""

    name = "fashion_mnist"

    def __init__(self, seed: int = 0, num_fd_samples: int = NUM_SAMPLES, classifier_path: str | Path | None = None):
        super().__init__(seed)
        self.num_fd_samples = num_fd_samples
        self.classifier_path = classifier_path  # None: the shipped flowzoo/assets/fashion_classifier.safetensors
        self._cache: dict[str, object] = {}

    def supports(self, dataset) -> bool:
        # By name: the classifier knows Fashion-MNIST's classes, not any 1x32x32 data.
        return getattr(dataset, "name", None) == "fashion_mnist" and tuple(dataset.sample_shape) == (1, 32, 32)

    def info(self, dataset) -> dict:
        """The protocol of these numbers, for result records: extractor weights and reference split hashes."""
        from flowzoo.eval.fashion_classifier import DEFAULT_PATH
        from flowzoo.eval.fid import sha256_file

        split = self._split(dataset)
        return {
            "implementation": "flowzoo.eval.fashion_metrics (FD on classifier features, 1)",
            "extractor": "Fashion-MNIST classifier (flowzoo prepare fashion-classifier)",
            "extractor_weights_sha256": sha256_file(self.classifier_path or DEFAULT_PATH),
            "reference": f"t10k without the floor set ({len(split['reference'])} images)",
            "reference_sha256": split["sha256"],
            "num_samples": self.num_fd_samples, "labels": "class-balanced (i mod 10)",
        }

    # -- cached pieces ------------------------------------------------------------------------------
    @property
    def classifier(self):
        # Imported lazily: the classifier module (and safetensors) load only when Fashion-MNIST is evaluated.
        from flowzoo.eval.fashion_classifier import DEFAULT_PATH, load_fashion_classifier

        return load_fashion_classifier(self.classifier_path or DEFAULT_PATH)

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.classifier
        feats = torch.cat([net.features(block) for block in x.clamp(-1, 1).split(BATCH)])
        return feats, net.head(feats)

    def _split(self, dataset) -> dict:
        """The fixed floor/reference split of the held-out images (indices into t10k) and its sha256."""
        if "split" not in self._cache:
            _, labels = dataset.pixels("heldout")
            classes = dataset.num_classes
            want = torch.bincount(balanced_labels(self.num_fd_samples, classes), minlength=classes)
            have = torch.bincount(labels, minlength=classes)
            floor = balanced_subset(labels, torch.minimum(want, have // 2), generator(REFERENCE, FLOOR_SPLIT_SEED))
            keep = torch.ones(len(labels), dtype=torch.bool)
            keep[floor] = False
            from flowzoo.eval.fashion_classifier import split_sha256

            digest = hashlib.sha256(split_sha256(dataset, "heldout").encode())
            digest.update(floor.to(torch.int64).numpy().tobytes())  # the data and which images are the floor
            self._cache["split"] = {"floor": floor, "reference": torch.nonzero(keep).squeeze(1),
                                    "sha256": digest.hexdigest()}
        return self._cache["split"]

    def _bank(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The 60,000 training images flattened (float32, 246 MB) and their squared norms, for memorisation."""
        if "bank" not in self._cache:
            bank = dataset.train_tensors()[0].flatten(1)
            self._cache["bank"] = (bank, (bank * bank).sum(1))
        return self._cache["bank"]

    def _reference_stats(self, dataset):
        """(mean, covariance) of the reference features, and the floor set's median nearest-train distance."""
        if "reference_stats" not in self._cache:
            held_x, _ = dataset.heldout_tensors()
            split = self._split(dataset)
            self._cache["reference_stats"] = gaussian_stats(self.features_and_logits(held_x[split["reference"]])[0])
            floor_nn = nearest_train_distances(held_x[split["floor"]], *self._bank(dataset))
            self._cache["heldout_nn_median"] = floor_nn.median().item()
        return self._cache["reference_stats"], self._cache["heldout_nn_median"]

    # -- the metric ---------------------------------------------------------------------------------
    def summarise(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict:
        """One share's features, predicted classes and nearest-train distances (what `finish` needs)."""
        x = self._check_shape(generated, dataset).clamp(-1, 1)
        feats, logits = self.features_and_logits(x)
        return {"features": feats, "pred": logits.argmax(dim=1),
                "nearest": nearest_train_distances(x, *self._bank(dataset)),
                "labels": None if labels is None else torch.as_tensor(labels).long().cpu()}

    def finish(self, parts: list, dataset) -> dict[str, float]:
        feats = torch.cat([p["features"] for p in parts])
        pred = torch.cat([p["pred"] for p in parts])
        nearest = torch.cat([p["nearest"] for p in parts])
        labels = None if parts[0]["labels"] is None else torch.cat([p["labels"] for p in parts])
        reference_stats, heldout_nn = self._reference_stats(dataset)
        return feature_metrics("fashion_mnist", feats, pred, labels, reference_stats, nearest.median().item() / heldout_nn,
                               num_fd_samples=self.num_fd_samples, seed=self.seed, num_classes=dataset.num_classes)

    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        return self.finish([self.summarise(generated, labels, dataset)], dataset)

    def reference(self, dataset) -> dict[str, float]:
        """heldout/*, class_means/*, train/* measured exactly as generated samples are, at the floor set's size
        (= num_fd_samples on the real data)."""
        split = self._split(dataset)
        held_x, held_y = dataset.heldout_tensors()
        floor_y = held_y[split["floor"]]
        counts = torch.bincount(floor_y, minlength=dataset.num_classes)
        train_pixels, train_y = dataset.pixels("train")  # uint8: scale only the chosen few, not all 60,000
        train_idx = balanced_subset(train_y, counts, generator(REFERENCE, FLOOR_SPLIT_SEED))
        sets = {
            "heldout": (held_x[split["floor"]], floor_y),
            "class_means": (dataset.class_means()[floor_y], floor_y),
            "train": (to_model_space(train_pixels[train_idx]), train_y[train_idx]),
        }
        out = {}
        with warnings.catch_warnings():  # on tiny stand-in data the floor set is below num_fd_samples: by design
            warnings.simplefilter("ignore")
            for name, (x, y) in sets.items():
                out.update({f"{name}/{k}": v for k, v in self(x, y, dataset).items()})
        return out
