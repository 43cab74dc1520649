"""The metric contract shared by every registered metric.

    metric = METRICS.get(name)(seed=0, ...)          # configuration and seed at construction
    metric.supports(dataset) -> bool                 # does this metric apply to that dataset?
    metric(generated, labels, dataset) -> dict[str, float]
    metric.reference(dataset) -> dict[str, float]    # the same numbers for reference sets

Sharded evaluation (several ranks, each with a contiguous share of the samples in index order) uses two
more calls, which default to gathering the samples themselves:
    part = metric.summarise(generated, labels, dataset)   # on every rank: what its share contributes
    metric.finish([part_rank0, part_rank1, ...], dataset)  # on rank 0: the numbers, == metric(all samples)
A metric with a feature extractor (FID, FVD) summarises to features, so rank 0 never holds every image.

`generated` is a tensor shaped (N, *dataset.sample_shape); `labels` are the classes the samples were
conditioned on, or None for unconditional sampling. Reference keys are "<reference set>/<key>"
(e.g. "real/swd" is the noise floor of "swd": fresh data against fresh data), so a table can put
each number beside its floor. Results depend only on the inputs and the seed.
"""

from __future__ import annotations

import torch


class Metric:
    """Base class; subclasses set `name` and implement `supports`, `__call__` and `reference`."""

    name = "metric"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def supports(self, dataset) -> bool:
        raise NotImplementedError

    def __call__(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset) -> dict[str, float]:
        raise NotImplementedError

    def reference(self, dataset) -> dict[str, float]:
        raise NotImplementedError

    def summarise(self, generated: torch.Tensor, labels: torch.Tensor | None, dataset):
        """One rank's contribution to a sharded evaluation; by default its samples and labels (on the CPU)."""
        generated = torch.as_tensor(generated).detach().cpu()
        return {"generated": generated, "labels": None if labels is None else torch.as_tensor(labels).cpu()}

    def finish(self, parts: list, dataset) -> dict[str, float]:
        """The metric over every rank's share, `parts` in rank (= sample index) order."""
        generated = torch.cat([p["generated"] for p in parts])
        labels = None if parts[0]["labels"] is None else torch.cat([p["labels"] for p in parts])
        return self(generated, labels, dataset)

    def _check_shape(self, generated: torch.Tensor, dataset) -> torch.Tensor:
        generated = torch.as_tensor(generated).detach().float().cpu()
        if tuple(generated.shape[1:]) != tuple(dataset.sample_shape):
            raise ValueError(
                f"{self.name}: generated samples have shape {tuple(generated.shape[1:])} but "
                f"{dataset.name} samples are {tuple(dataset.sample_shape)}."
            )
        return generated

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
