"""Training-step time of DiT-tiny/2 on 1x8x8 inputs (batch 64) for flow_matching, alphaflow and meanflow.

One step = objective forward (target included) + backward + Adam update, as in flowzoo.train.loop.
The objectives are timed interleaved (round-robin, a block of steps each), so drift in the machine's
load hits them alike and the ratios to flow_matching are fair even when the absolute times wander.
alphaflow is timed at mid-schedule (alpha = 0.5 on the r < t samples: the two-point target's extra
forward); meanflow's r < t samples (25%) take the forward-mode JVP.

    python benchmarks/step_time.py --threads 1 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowzoo.backbones import create_backbone
from flowzoo.objectives import create_objective

TOTAL_STEPS = 1000  # the alphaflow schedule's length; timed at its middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=10, help="round-robin rounds")
    parser.add_argument("--block", type=int, default=5, help="steps per objective per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per objective first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x = torch.randn(args.batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(1))
    step = TOTAL_STEPS // 2
    runs = {}
    for name in ("flow_matching", "alphaflow", "meanflow"):
        torch.manual_seed(0)
        net = create_backbone("DiT-tiny/2", input_size=8, in_channels=1, num_classes=10)
        objective = create_objective(name, net, total_steps=TOTAL_STEPS)
        runs[name] = (objective, torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.95)))
    alpha = runs["alphaflow"][0].alpha_schedule.value(step)

    def one_step(name: str, k: int) -> None:
        objective, optimizer = runs[name]
        loss, _ = objective(x, y, step, torch.Generator().manual_seed(k))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for name in runs:
        for k in range(args.warmup):
            one_step(name, k)
    times = {name: [] for name in runs}
    for rnd in range(args.rounds):
        for name in runs:
            start = time.perf_counter()
            for k in range(args.block):
                one_step(name, rnd * args.block + k)
            times[name].append((time.perf_counter() - start) / args.block * 1e3)

    base = statistics.median(times["flow_matching"])
    print(f"DiT-tiny/2, 1x8x8, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{args.rounds} rounds x {args.block} steps (median ms/step; alphaflow alpha = {alpha:.3f})")
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"  {name:14s} {med:8.1f} ms/step   x{med / base:.2f} flow_matching   (min {min(ms):.1f}, max {max(ms):.1f})")


if __name__ == "__main__":
    main()
