"""TF32, set explicitly: matmuls and cuDNN convolutions alike, and never inside an fp32 target.

On Ampere and later GPUs an fp32 matmul or convolution may run in TF32 (10-bit mantissa). PyTorch's
defaults differ by op: matmuls are full fp32 (`torch.backends.cuda.matmul.allow_tf32 = False`) while
cuDNN convolutions use TF32 (`torch.backends.cudnn.allow_tf32 = True`), so a DiT's patch embedding ran in
TF32 and an "fp32 target" was not fp32. flowzoo sets both from `train.tf32` at the start of a run and
records them in provenance.

Default off. Under the default bf16 autocast on CUDA the network's matmuls and convolutions run in
bf16 whatever TF32 says, so TF32 only changes what was asked to be fp32: the target under
`objective.target_precision: fp32`, fp32 runs, and the loss. Turning it on there trades the precision
the user asked for for speed; `train.tf32: true` does that knowingly. Inside the target's network calls
at target_precision fp32 TF32 is off regardless (`full_fp32`), so "fp32" always means fp32.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions, on or off together (and the matching matmul precision)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def tf32_state() -> dict[str, bool | str]:
    """What fp32 matmuls and convolutions run in now, for a record's provenance."""
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for the block (matmuls and convolutions), then back to what it was."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    set_tf32(False)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.set_float32_matmul_precision(precision)
