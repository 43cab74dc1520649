"""Why the digits default uses the residual MLP: its training step against DiT-tiny/2's on digits.

Times an alphaflow step (mid-curriculum, batch 256, 1x8x8) for each backbone, interleaved in one
process (so load on the machine hits both alike), and prints the medians and their ratio.

    python benchmarks/backbone_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowzoo.backbones import create_backbone
from flowzoo.objectives import create_objective

BACKBONES = {
    "mlp": dict(sample_shape=(1, 8, 8), num_classes=10, width=256, depth=4),  # configs/data/digits.yaml
    "DiT-tiny/2": dict(input_size=8, in_channels=1, num_classes=10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=3, help="steps per backbone per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 8, 8) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))
    cases = {}
    for name, kwargs in BACKBONES.items():
        net = create_backbone(name, **kwargs)
        cases[name] = (create_objective("alphaflow", net, total_steps=10_000), torch.optim.Adam(net.parameters(), 1e-3))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds):
        for name, (objective, optimizer) in cases.items():
            start = time.perf_counter()
            for k in range(args.block):
                loss, _ = objective(x, y, step=5_000, generator=torch.Generator().manual_seed(k))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if round_ >= 2:  # the first rounds warm up allocators and caches
                times[name].append((time.perf_counter() - start) / args.block)
    medians = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    for name, ms in medians.items():
        print(f"{name:12s} {ms:8.1f} ms/step")
    print(f"DiT-tiny/2 / mlp = {medians['DiT-tiny/2'] / medians['mlp']:.1f}x")


if __name__ == "__main__":
    main()
