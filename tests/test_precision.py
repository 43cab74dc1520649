"""TF32 set explicitly (train.tf32) for matmuls and cuDNN convolutions alike, never inside an fp32 target,
and recorded in a run's provenance. The flags are plain torch settings, so this is testable on a CPU:
what a GPU would do with them is torch's documented behaviour."""

from __future__ import annotations

import json

import torch

from flowzoo.objectives import create_objective
from flowzoo.precision import full_fp32, set_tf32, tf32_state
from test_cli import TINY, flowzoo
from tiny_nets import TinyVelocityNet


def flags() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())


def test_set_tf32_moves_matmuls_and_convolutions_together_and_full_fp32_restores():
    before = flags()
    try:
        set_tf32(True)
        assert flags() == (True, True, "high")
        with full_fp32():
            assert flags() == (False, False, "highest")
        assert flags() == (True, True, "high")
        set_tf32(False)
        assert flags() == (False, False, "highest") and tf32_state()["cudnn_allow_tf32"] is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


class FlagSpy(TinyVelocityNet):
    """Records, per call, whether it ran with gradients (the prediction) or without (the target) and TF32's state."""

    def __init__(self):
        super().__init__(dim=4, num_classes=3)
        self.calls = []

    def forward(self, z, t, h, y=None):
        self.calls.append((torch.is_grad_enabled(), flags()[0], flags()[1]))
        return super().forward(z, t, h, y)


def test_an_fp32_target_runs_without_tf32_even_when_training_allows_it():
    before = flags()
    try:
        for name in ("meanflow", "imf"):  # JVP targets: one along data v, one along the model's own v
            net = FlagSpy()
            objective = create_objective(name, net, total_steps=10, target_precision="fp32")
            set_tf32(True)
            objective(torch.randn(8, 4), torch.randint(0, 3, (8,)), step=0, generator=torch.Generator().manual_seed(0))
            target_calls = [c for c in net.calls if not c[0]]
            prediction_calls = [c for c in net.calls if c[0]]
            assert target_calls and prediction_calls, name
            assert all(c[1] and c[2] for c in prediction_calls), name  # the forward may use TF32
            assert all(not c[1] and not c[2] for c in target_calls), name  # the fp32 target never does
            assert flags()[:2] == (True, True), name  # and the setting is back afterwards
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


def test_a_run_records_what_fp32_ran_in(tmp_path):
    for tf32 in (False, True):
        out = tmp_path / f"tf32-{tf32}"
        code, _, _ = flowzoo("run", "--objective", "flow_matching", "--data", "toy:moons", "--steps", "2", "--out", str(out),
                             "--set", f"train.tf32={str(tf32).lower()}", "--set", "eval.num_samples=50",
                             "--set", "eval.previews=false", *TINY)
        assert code == 0
        recorded = json.loads((out / "result.json").read_text())["provenance"]["tf32"]
        assert recorded == {"matmul_allow_tf32": tf32, "cudnn_allow_tf32": tf32,
                            "float32_matmul_precision": "high" if tf32 else "highest"}
    set_tf32(False)
