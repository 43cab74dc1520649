"""Fault suite, crashes: SIGKILL inside checkpoint, metrics and result writes; SIGINT; two runs on one folder.

Kills are deterministic: FLOWZOO_FAULT (flowzoo/fault_hook.py) makes the child SIGKILL itself half way
through the n-th matching write, or pause there until signalled. Every rerun must end with the numbers
of an uninterrupted run of the same seed, and no earlier file may change.
"""

from __future__ import annotations

import signal

import pytest

from faults_helpers import (assert_kept, assert_one_sentence, checkpoint_step, checksums, final_numbers,
                            run_subprocess, toy_args)
from test_cli import flowzoo


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    code, _, _ = flowzoo(*toy_args(out))
    assert code == 0
    return final_numbers(out)


def test_faults_sigkill_inside_checkpoint_metrics_and_result_writes_then_resume(tmp_path, reference, capsys):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"

    # 3rd .pt write = step-00000004.pt (step 2 wrote step-00000002.pt and latest.pt): killed half way.
    proc = run_subprocess(toy_args(out), fault="*.pt:3:kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_step(ckpts / "latest.pt") == 2 and not (ckpts / "step-00000004.pt").exists()
    kept = checksums(ckpts)

    # Resume, killed while appending the step-6 metrics line (a torn last line).
    proc = run_subprocess(toy_args(out), fault="*/metrics.jsonl:2:kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.jsonl").read_text().endswith("\n")  # the kill really tore the line
    assert_kept({k: v for k, v in kept.items() if k != "latest.pt"}, ckpts)
    assert checkpoint_step(ckpts / "latest.pt") == 4
    kept = checksums(ckpts)

    # Resume, trains to the end, killed inside the result.json write: no torn record appears.
    proc = run_subprocess(toy_args(out), fault="*/result.json:1:kill")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "result.json").exists() and checkpoint_step(ckpts / "latest.pt") == 8
    assert_kept({k: v for k, v in kept.items() if k != "latest.pt"}, ckpts)

    # The lock files the killed processes left do not block this run, which ends as the uninterrupted one.
    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 0 and "Traceback" not in err
    assert final_numbers(out) == reference


def test_faults_sigint_and_a_second_run_on_the_same_directory(tmp_path, reference, capsys):
    out = tmp_path / "run"
    # The child pauses inside its 2nd metrics write (step 4) while it holds the run directory.
    proc = run_subprocess(toy_args(out), fault="*/metrics.jsonl:2:pause")
    while "FLOWZOO_FAULT paused" not in (line := proc.stderr.readline()):
        if not line:
            pytest.fail(f"the run never paused: {proc.communicate()}")
    before = checksums(out / "checkpoints")

    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 2
    assert_one_sentence(err, "is in use by process", str(proc.pid))
    assert_kept(before, out / "checkpoints")

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_one_sentence(err, "SIGINT at step 4", "run the same command again")
    assert checkpoint_step(out / "checkpoints" / "latest.pt") == 4  # stopped at the step boundary, checkpointed

    code, _, err = flowzoo(*toy_args(out), capsys=capsys)
    assert code == 0 and "Traceback" not in err
    assert final_numbers(out) == reference
