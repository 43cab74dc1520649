"""The real jvp_flash kernel (jvp-flash-attention's Triton code) on a CPU, under Triton's interpreter.

``@triton.jit`` reads TRITON_INTERPRET when it decorates, and torch imports triton, so the interpreter must be
on before Python starts: every case runs in subprocesses whose environment has TRITON_INTERPRET=1. The
network is a DiT with the kernel's smallest working shape: DiT-tiny/1 on 1x8x8 inputs (64 tokens), hidden 128
in 2 heads of 64, 2 blocks, perturbed off the adaLN-Zero init so attention and its tangent reach the output.

(a) the MeanFlow target's du/dt through jvp_flash equals the math kernel's (forward and functorch backends;
    relative L2 error printed, < 1e-5, measured 5e-7), while dropping attention's tangent moves it by 0.14;
(b) the parameter gradients of the MeanFlow loss and of the alpha-Flow loss on its alpha = 0 branch agree
    (cosine printed, > 0.9999, and relative L2 error < 1e-5, measured 2e-7);
(c) one DDP step and one FSDP2 step on two gloo processes: the gradient the optimizer receives (relative L2
    error < 1e-5, measured 2e-7) and the logged loss with jvp_flash equal the math kernel's;
(d) what the interpreter cannot run is refused in one sentence: bfloat16 (it has no bfloat16, and gives
    garbage without an error), head dim 16, and TRITON_INTERPRET set only after triton was imported.

Skipped when jvp-flash-attention is not installed (``make install`` installs it).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from test_train_support import finish, free_port, launch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jvp_flash_attention") is None or importlib.util.find_spec("triton") is None,
    reason="jvp-flash-attention (and triton) are not installed; `make install` or pip install 'flowzoo[gpu]' adds them",
)

INTERPRET = {"TRITON_INTERPRET": "1"}

# Shared by the workers: the DiT, a counter of the Triton kernel's calls, and the comparisons.
COMMON = '''
import dataclasses, json, os, sys
import torch
torch.set_num_threads(1)
import torch.autograd.forward_ad as fwAD
import flowzoo.backbones.attention as attn_mod
from flowzoo.backbones import create_backbone


def dit(num_heads=2, seed=0):
    """DiT-tiny/1 on 1x8x8: 64 tokens, hidden 128 in num_heads heads, 2 blocks, adaLN-Zero perturbed."""
    torch.manual_seed(seed)
    net = create_backbone("DiT-tiny/1", input_size=8, in_channels=1, num_classes=10, depth=2, num_heads=num_heads)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


calls = []  # the Triton kernel's calls: (shape, whether a tangent came in)
kernel = attn_mod.KERNELS["jvp_flash"]


def counted(q, k, v):
    calls.append((tuple(q.shape), fwAD.unpack_dual(q).tangent is not None))
    return kernel.fn(q, k, v)


attn_mod.KERNELS["jvp_flash"] = dataclasses.replace(kernel, fn=counted)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item()  # float32 can pass 1
'''

SINGLE = COMMON + '''
from flowzoo.backbones.attention import AttentionKernel, AttentionKernelError, register_kernel
from flowzoo.objectives import create_objective
from flowzoo.objectives.jvp import forward_mode_jvp
from flowzoo.objectives.velocity import ConditionedVelocity

out = {"interpreted": None}
g = torch.Generator().manual_seed(1)
x, y = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 3, 7, 9])


def terms(name, backend, kernel, step=0):
    """loss_terms and parameter gradients of preset ``name`` with every sample on the JVP branch."""
    net = dit()
    objective = create_objective(name, net, total_steps=10, label_dropout=0.0, fm_ratio=0.0,
                                 jvp={"name": backend, "attention": kernel})
    drawn = objective.draw(x, y, step, torch.Generator().manual_seed(2))
    loss, parts = objective.loss_terms(x, drawn, step)
    loss.backward()
    assert bool(parts.target.jvp.all()) and bool((parts.alpha == 0).all()), (name, parts.alpha)
    return parts.target.du_dt, torch.cat([p.grad.flatten() for p in net.parameters()])


# (a) and (b)
for backend in ("forward", "functorch"):
    before = len(calls)
    d_flash, g_flash = terms("meanflow", backend, "jvp_flash")
    out["interpreted"] = attn_mod.jvp_flash_interpreted()
    d_math, g_math = terms("meanflow", backend, "math")
    out[f"meanflow/{backend}"] = {"du_dt_rel_err": rel(d_flash, d_math), "grad_cosine": cosine(g_flash, g_math),
                                  "grad_rel_err": rel(g_flash, g_math), "kernel_calls": len(calls) - before,
                                  "du_dt_norm": d_math.norm().item()}
d_flash, g_flash = terms("alphaflow", "forward", "jvp_flash", step=10)  # the end of the curriculum: alpha = 0
d_math, g_math = terms("alphaflow", "forward", "math", step=10)
out["alphaflow/forward"] = {"du_dt_rel_err": rel(d_flash, d_math), "grad_cosine": cosine(g_flash, g_math),
                            "grad_rel_err": rel(g_flash, g_math)}
out["tangent_dual"] = all(dual for _, dual in calls)
out["kernel_shapes"] = sorted({shape for shape, _ in calls})

# The bound bites: attention without its tangent (the primal's SDPA) moves du/dt by this much.
register_kernel("no_tangent", AttentionKernel(
    fn=lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(*(fwAD.unpack_dual(a).primal for a in (q, k, v)))))
d_none, _ = terms("meanflow", "forward", "no_tangent")
out["no_tangent_rel_err"] = rel(d_none, d_math)

# (d) refused in one sentence, before the kernel runs
z, v = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
t, r = torch.tensor([0.9, 0.6, 0.3, 0.7]), torch.tensor([0.1, 0.0, 0.25, 0.5])
before = len(calls)
refusals = {}
for case, model, dtype in (("bfloat16", dit(), torch.bfloat16), ("head dim 16", dit(num_heads=8), torch.float32)):
    try:
        forward_mode_jvp(ConditionedVelocity(model.to(dtype), y), z.to(dtype), r.to(dtype), t.to(dtype), v.to(dtype),
                         attention="jvp_flash")
        refusals[case] = None
    except AttentionKernelError as exc:
        refusals[case] = str(exc)
out["refusals"] = refusals
out["calls_when_refused"] = len(calls) - before
json.dump(out, open(sys.argv[1], "w"))
'''

# TRITON_INTERPRET set only after something imported triton (torch._dynamo does): refused in one sentence.
LATE = '''
import os, sys
import torch
import torch._dynamo  # imports triton, whose @jit library is then compiled, not interpreted
torch.cuda.is_available = lambda: False  # the case of a CPU-only machine, on any machine
os.environ["TRITON_INTERPRET"] = "1"
from flowzoo.backbones.attention import AttentionKernelError, check_kernel
try:
    check_kernel("jvp_flash")
    print("accepted")
except AttentionKernelError as exc:
    print(exc)
'''

# (c) one optimizer step of meanflow under DDP and under FSDP2, math vs jvp_flash, in one gloo process group.
STEP = COMMON + '''
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook
from flowzoo.objectives import create_objective
from flowzoo.train import TrainOptions, train
from test_train_support import MixtureDataset

out_dir = sys.argv[1]
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")  # train() joins this group and leaves it standing
seen = {}


def grads_at_step(optimizer, args, kwargs):
    """The gradient the optimizer receives (FSDP2's shards gathered: a collective, on every rank)."""
    grads = [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
             for group in optimizer.param_groups for p in group["params"]]
    seen["grad"] = torch.cat([grad.flatten() for grad in grads])


register_optimizer_step_pre_hook(grads_at_step)
results = {}
for parallel in ("ddp", "fsdp"):
    for kernel_name in ("math", "jvp_flash"):
        before = len(calls)
        net = dit()
        objective = create_objective("meanflow", net, fm_ratio=0.0, jvp={"name": "forward", "attention": kernel_name})
        name = f"{parallel}-{kernel_name}"
        opts = TrainOptions(out_dir=os.path.join(out_dir, name), steps=1, batch_size=8, lr=1e-3, warmup_steps=0,
                            log_every=1, checkpoint_every=100, sample_every=100, ema_halflives=[], quiet=True,
                            device="cpu", parallel=parallel)
        state = train(opts, net, objective, MixtureDataset())
        results[name] = {"grad": seen.pop("grad"), "kernel_calls": len(calls) - before, "step": state.step}
torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
dist.destroy_process_group()
'''


def _run(tmp_path, script: str, *args: str, timeout: float = 300, **env: str) -> str:
    path = tmp_path / "worker.py"
    path.write_text(script)
    return finish(launch(path, *args, **{**INTERPRET, **env}), timeout=timeout)


def one_sentence(message: str) -> None:
    assert message and "\n" not in message and message.endswith("."), message
    assert ". " not in message.replace("e.g. ", ""), message


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interpreter")
    _run(tmp, SINGLE, str(tmp / "out.json"))
    return json.loads((tmp / "out.json").read_text())


def test_du_dt_through_jvp_flash_equals_the_math_kernels(single):
    assert single["interpreted"], "the kernel did not run under Triton's interpreter"
    assert single["tangent_dual"] and single["kernel_shapes"] == [[4, 2, 64, 64]], single["kernel_shapes"]
    for backend in ("forward", "functorch"):
        result = single[f"meanflow/{backend}"]
        print(f"meanflow, {backend} backend: du/dt relative L2 error jvp_flash vs math {result['du_dt_rel_err']:.2e} "
              f"({result['kernel_calls']} kernel calls)")
        assert result["kernel_calls"] == 2, result  # one per block: the Triton kernel ran, on dual tensors
        assert result["du_dt_norm"] > 0.1, result
        assert result["du_dt_rel_err"] < 1e-5, result
    print(f"attention without its tangent: du/dt relative error {single['no_tangent_rel_err']:.2e}")
    assert single["no_tangent_rel_err"] > 1e-2  # the tangent through attention matters at this size


def test_loss_gradients_through_jvp_flash_equal_the_math_kernels(single):
    for case in ("meanflow/forward", "meanflow/functorch", "alphaflow/forward"):
        result = single[case]
        print(f"{case}: gradient cosine jvp_flash vs math 1 - {1 - result['grad_cosine']:.2e}, "
              f"relative L2 error {result['grad_rel_err']:.2e}")
        assert result["grad_cosine"] > 0.9999, (case, result)
        assert result["grad_rel_err"] < 1e-5, (case, result)


def test_what_the_interpreter_cannot_run_is_refused_in_one_sentence(single, tmp_path):
    refusals = single["refusals"]
    assert "under Triton's interpreter supports float16, float32, not bfloat16" in refusals["bfloat16"], refusals
    assert "head dims 32, 64, 128, 256, not 16" in refusals["head dim 16"], refusals
    assert single["calls_when_refused"] == 0
    for message in refusals.values():
        one_sentence(message)
    late = _run(tmp_path, LATE, TRITON_INTERPRET="0").strip().splitlines()[-1]
    assert "Triton was imported before it was set" in late, late
    one_sentence(late)


def test_one_ddp_and_one_fsdp_step_with_jvp_flash_equal_the_math_steps(tmp_path):
    port = free_port()
    script = tmp_path / "worker.py"
    script.write_text(STEP)
    procs = [launch(script, tmp_path, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", **INTERPRET) for rank in range(2)]
    for proc in procs:
        finish(proc, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for parallel in ("ddp", "fsdp"):
        math, flash = ranks[0][f"{parallel}-math"], ranks[0][f"{parallel}-jvp_flash"]
        assert math["step"] == flash["step"] == 1
        assert math["kernel_calls"] == 0 and all(r[f"{parallel}-jvp_flash"]["kernel_calls"] == 2 for r in ranks)
        assert torch.equal(flash["grad"], ranks[1][f"{parallel}-jvp_flash"]["grad"])  # the ranks' gradient is one
        a, b = flash["grad"].double(), math["grad"].double()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        err = ((a - b).norm() / b.norm()).item()
        print(f"{parallel} step on 2 gloo ranks: gradient jvp_flash vs math, cosine 1 - {1 - cos:.2e}, "
              f"relative L2 error {err:.2e}")
        assert cos > 0.9999 and err < 1e-5, (parallel, cos, err)
        loss = [json.loads((tmp_path / f"{parallel}-{k}" / "metrics.jsonl").read_text())["loss"] for k in ("math", "jvp_flash")]
        assert loss[1] == pytest.approx(loss[0], rel=1e-5), (parallel, loss)
