"""train.loggers: TensorBoard events read back with TensorBoard's own reader, W&B offline files read back with
W&B's record format, and a failing logger that warns once while metrics.jsonl stays complete."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from flowzoo.config import config_hash
from flowzoo.loggers import LoggerWarning, Trackers
from flowzoo.registry import LOGGERS, RegistryError
from test_cli import flowzoo

# 200 toy samples are few for the toy metrics' floors; the numbers are only compared with themselves here.
pytestmark = pytest.mark.filterwarnings("ignore:toy2d:UserWarning")

# A few steps on 2-D toy data: metrics every 2 steps, a checkpoint and a preview figure at step 4.
TOY = ["--objective", "meanflow", "--data", "toy:moons", "--batch-size", "32", "--quiet",
       "--set", "train.log_every=2", "--set", "train.checkpoint_every=4", "--set", "train.sample_every=4",
       "--set", "train.warmup_steps=1", "--set", "backbone.width=32", "--set", "backbone.depth=1",
       "--set", "eval.num_samples=200", "--set", "eval.samplers={meanflow: [1]}"]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tensorboard_events_hold_metrics_jsonl_the_evaluation_the_figures_and_the_config(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    code, _, err = flowzoo("run", *TOY, "--steps", "6", "--out", str(out), "--set", "train.loggers=[tensorboard]",
                           capsys=capsys)
    assert code == 0, err
    events = EventAccumulator(str(out), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    lines = jsonl(out / "metrics.jsonl")
    assert [line["step"] for line in lines] == [2, 4, 6]
    for key in ("loss", "mse", "alpha", "fm_ratio", "lr", "grad_norm", "steps_per_s", "L_TFM", "L_TC"):
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert logged == [(line["step"], pytest.approx(line[key], rel=1e-6, abs=1e-12)) for line in lines], key
    result = json.loads((out / "result.json").read_text())
    for metric, value in result["results"]["meanflow@1"].items():
        [point] = events.Scalars(f"eval/meanflow@1/{metric}")
        assert (point.step, point.value) == (6, pytest.approx(value, rel=1e-6))
    assert events.Scalars("reference/real/swd")[0].value == pytest.approx(result["reference"]["real/swd"], rel=1e-6)
    assert [e.step for e in events.Images("samples/meanflow@1")] == [4, 6]  # the previews during training
    [final] = events.Images("eval/meanflow@1/samples")
    assert final.step == 6 and final.encoded_image_string.startswith(b"\x89PNG")
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: meanflow" in config and "toy:moons" in config
    # Loggers do not make a run another experiment: adding one to a run that started is no new config.
    cfg = {"seed": 0, "train": {"steps": 6, "loggers": ["tensorboard"]}, "out": "a"}
    assert config_hash(cfg) == config_hash({"seed": 0, "train": {"steps": 6}, "out": "b"})
    assert config_hash(cfg) != config_hash({"seed": 0, "train": {"steps": 7}})


def wandb_records(path: Path) -> list:
    """The records of a W&B .wandb file (LevelDB log format: 32 KiB blocks of checksummed chunks, each record
    a protobuf wandb_internal_pb2.Record), read without a network or W&B's servers."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, chunk, pos = path.read_bytes(), 32768, [], b"", 7  # 7 bytes: ":W&B", magic, version
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:  # block trailer or zero padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_history(records: list) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.setdefault(int(items["_step"]), {}).update(items)
    return rows


def test_wandb_offline_keeps_one_run_id_across_a_resume(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    import flowzoo.pipeline.run as pipeline

    for var, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(var, value)
    (tmp_path / "wandb-dir").mkdir()
    out = tmp_path / "run"
    args = ["run", *TOY, "--steps", "8", "--out", str(out), "--set", "train.loggers=[{name: wandb, project: tests}]"]
    preview = pipeline.PreviewHook.__call__

    def killed_after_step_4(self, step, state):  # the run dies right after its step-4 checkpoint and preview
        preview(self, step, state)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.PreviewHook, "__call__", killed_after_step_4)
    assert flowzoo(*args, capsys=capsys)[0] == 130
    monkeypatch.setattr(pipeline.PreviewHook, "__call__", preview)
    code, _, err = flowzoo(*args, capsys=capsys)  # the same command resumes from step 4
    assert code == 0, err
    assert [line["step"] for line in jsonl(out / "metrics.jsonl")] == [2, 4, 6, 8]

    run_id = (out / "wandb_run_id.txt").read_text().strip()
    # wandb names a run's folder offline-run-<second>-<id>, adding -1, -2, ... when a run of the same id
    # started within the same second (wandb_init.set_sync_dir_suffix): a fast resume gets ...-<id>-1
    made = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    folders = sorted((f for f in made if f.name.split("-")[3] == run_id), key=lambda f: f.name.split("-")[2:])
    assert len(folders) == 2, "the resumed run must continue the W&B run of the same id"
    first, second = (wandb_records(next(folder.glob("run-*.wandb"))) for folder in folders)
    for records in (first, second):
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.run_id == run_id and run.project == "tests"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["objective"]["name"] == "meanflow" and config["train"]["loggers"][0]["name"] == "wandb"
    lines = {line["step"]: line for line in jsonl(out / "metrics.jsonl")}
    before, after = wandb_history(first), wandb_history(second)
    assert sorted(s for s, row in before.items() if "train/loss" in row) == [2, 4]
    assert sorted(s for s, row in after.items() if "train/loss" in row) == [6, 8]
    for step, row in {**before, **after}.items():
        if "train/loss" in row:
            assert row["train/loss"] == pytest.approx(lines[step]["loss"]) and row["train/lr"] == lines[step]["lr"]
    result = json.loads((out / "result.json").read_text())
    assert after[8]["eval/meanflow@1/swd"] == pytest.approx(result["results"]["meanflow@1"]["swd"])
    assert before[4]["samples/meanflow@1/_type"] == after[8]["eval/meanflow@1/samples/_type"] == "image-file"
    media = [p for folder in folders for p in (folder / "files" / "media" / "images").rglob("*.png")]
    assert len(media) == 5  # the step-4 previews (1 and 2 NFE); the step-8 ones and the final evaluation's figure


class Recorder:
    """A logger that keeps what it is given (a test double of the contract in flowzoo/loggers/__init__.py)."""

    def __init__(self, run_dir, config=None, resume_step=0, fail_on=None):
        self.fail_on, self.metrics, self.closed = fail_on, [], None
        if fail_on == "start":
            raise ImportError("no module named 'tracker_sdk'")
        RECORDERS.append(self)

    def log_metrics(self, metrics, step):
        if self.fail_on == "log":
            raise ConnectionError("no network")
        self.metrics.append((step, dict(metrics)))

    def log_image(self, tag, path, step):
        pass

    def close(self, failed=False):
        self.closed = failed


RECORDERS: list[Recorder] = []


def test_a_failing_logger_warns_once_and_the_run_and_metrics_jsonl_go_on(tmp_path, monkeypatch):
    from flowzoo.backbones import create_backbone
    from flowzoo.data import create_dataset
    from flowzoo.objectives import create_objective
    from flowzoo.train import TrainOptions, train

    monkeypatch.setattr(LOGGERS, "_entries", dict(LOGGERS._entries))
    LOGGERS.add("recorder", Recorder, source="tests")
    RECORDERS.clear()
    with pytest.raises(RegistryError, match="did you mean 'tensorboard'"):
        Trackers(["tensorbord"], tmp_path)
    with pytest.raises(RegistryError, match="logger 'recorder' got bad arguments"):
        Trackers([{"name": "recorder", "colour": "red"}], tmp_path)

    net = create_backbone("mlp", sample_shape=(2,), num_classes=0, width=16, depth=1)
    objective = create_objective("flow_matching", net, total_steps=6)
    loggers = [{"name": "recorder", "fail_on": "log"}, {"name": "recorder", "fail_on": "start"}, "recorder"]
    options = TrainOptions(out_dir=str(tmp_path / "run"), steps=6, batch_size=16, warmup_steps=1, log_every=2,
                           checkpoint_every=6, sample_every=100, ema_halflives=[10.0], quiet=True, loggers=loggers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = train(options, net, objective, create_dataset("toy:moons"))
    assert state.step == 6
    said = [str(w.message) for w in caught if issubclass(w.category, LoggerWarning)]
    assert len(said) == 2  # once per failing logger, not once per record
    assert any("could not start (ImportError: no module named 'tracker_sdk')" in s for s in said)
    assert any("failed to log metrics (ConnectionError: no network)" in s for s in said)
    assert all("the run goes on without it" in s for s in said)
    lines = jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [line["step"] for line in lines] == [2, 4, 6]
    failing, healthy = RECORDERS
    assert failing.closed is True and healthy.closed is False  # the failed one was closed when it was dropped
    assert [step for step, _ in healthy.metrics] == [2, 4, 6]
    assert healthy.metrics[0][1]["train/loss"] == pytest.approx(lines[0]["loss"]) and "train/step" not in healthy.metrics[0][1]
    assert torch.isfinite(torch.tensor(lines[-1]["loss"]))


def test_the_documented_logger_plugin_receives_the_records(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    block = re.search(r"## Logger\n.*?```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.setattr(LOGGERS, "_entries", dict(LOGGERS._entries))
    exec(compile(block, "docs/plugins.md", "exec"), {"__name__": "plugins_doc_logger"})
    figure = tmp_path / "step-00000002-nfe1.png"
    figure.write_bytes(b"\x89PNG")
    with Trackers([{"name": "example_csv", "filename": "s.csv"}], tmp_path, config={"seed": 0}) as trackers:
        assert not (tmp_path / "s.csv").exists()  # nothing is opened before the first record
        trackers.log_metrics({"step": 2, "loss": 0.5, "note": "text is left out"}, 2, prefix="train/")
        trackers.log_images({"samples/meanflow@1": figure, "samples/missing": tmp_path / "none.png"}, 2)
    assert (tmp_path / "s.csv").read_text().splitlines() == ["2,train/loss,0.5", f"2,samples/meanflow@1,{figure}"]
