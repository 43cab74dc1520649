"""Training compute per step, measured by counting network calls, checked against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowzoo.leaderboard.compute_cost import forward_flops_per_sample, passes_per_step


@pytest.mark.parametrize("fm_ratio", [1.0, 0.75, 0.5])
def test_meanflow_runs_one_jvp_per_r_below_t_sample(fm_ratio):
    passes = passes_per_step("meanflow", {"fm_ratio": fm_ratio, "time_sampler": "uniform"}, 1000, batch=256, points=3)
    assert passes == {"forward": 1.0, "jvp": pytest.approx(1 - fm_ratio, abs=1 / 256), "backward": 1.0}


def test_flow_matching_is_one_forward_and_one_backward():
    assert passes_per_step("flow_matching", {}, 1000, points=3) == {"forward": 1.0, "jvp": 0.0, "backward": 1.0}


def test_shortcut_bootstrap_costs_two_target_forwards_per_bootstrapped_sample():
    # 1/8 of each batch bootstraps: v~ = u(z_t, s, t) and u(z_s, r, s), two no-grad forwards each.
    passes = passes_per_step("shortcut", {}, 1000, batch=512, points=3)
    assert passes["forward"] == pytest.approx(1 + 2 * 0.125, abs=2 / 512) and passes["jvp"] == 0.0


def test_double_backward_jvp_is_counted_as_jvp_not_as_prediction():
    forward_mode = passes_per_step("meanflow", {"fm_ratio": 0.5}, 100, batch=128, points=2)
    double_backward = passes_per_step("meanflow", {"fm_ratio": 0.5, "jvp": "double_backward"}, 100, batch=128, points=2)
    assert forward_mode == double_backward


def test_forward_flops_of_a_linear_network_match_the_hand_count():
    class TwoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 32), nn.Linear(32, 6)

        def forward(self, z, t, h, y=None):
            return self.b(torch.relu(self.a(z)))

    assert forward_flops_per_sample(TwoLinear(), (6,), 0) == 2 * (6 * 32 + 32 * 6)
