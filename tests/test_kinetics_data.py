"""Kinetics-700 on stand-in videos: annotations and layouts, identical decoders, clips, skips, exact resume,
the latent cache (kill/resume), and one-sentence errors from the CLI."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from flowzoo.data import create_dataset
from flowzoo.data.kinetics import (ClipSpec, class_names, get_decoder, kinetics_data_dir, locate_videos,
                                   read_annotations)
from flowzoo.data.kinetics.clips import crop_frames, to_unit
from video_standins import BROKEN, CLASSES, MISSING, SHORT, write_kinetics_standin

pytestmark = pytest.mark.filterwarnings("ignore:kinetics700:UserWarning")  # the stand-in's bad videos, on purpose
SMALL = {"frames": 8, "stride": 2, "resolution": 32}  # span 15 frames: the 6-frame video is too short


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_kinetics_standin(tmp_path_factory.mktemp("k700") / "k700")


def make(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing video's warning; tested on its own below
        return create_dataset("kinetics700", path=str(root), **{**SMALL, "workers": 0, **kw})


def draw(stream, k):
    return [stream.next() for _ in range(k)]


def test_annotations_classes_and_the_layout_rule(standin, tmp_path):
    root, csv = standin
    clips = read_annotations([csv, root / "annotations" / "validate.csv"])
    assert class_names(clips) == sorted(CLASSES) and class_names(read_annotations(csv)) == sorted(CLASSES)
    found = dict(zip((c.youtube_id for c in clips), locate_videos(root, clips)))
    assert found[MISSING] is None and found[BROKEN] is not None and found[SHORT] is not None
    rel = {k: v.relative_to(root).parts for k, v in found.items() if v is not None}
    assert rel["vid00_a-b0"] == ("train", "abseiling", "vid00_a-b0_000000_000010.mp4")  # ROOT/split/label/
    assert rel["vid03_a-b3"][0] == "train" and len(rel["vid03_a-b3"]) == 2  # ROOT/split/
    assert len(rel["vid05_a-b5"]) == 1  # flat
    assert rel["valvid00xy"][0] == "val"  # split "validate" in a folder named val
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,time_start\nx,y,1\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) time_end, split"):
        read_annotations(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_annotations(tmp_path / "nope.csv")


def test_pyav_and_decord_return_identical_frames(standin):
    pytest.importorskip("decord")
    root, _ = standin
    pyav, decord = get_decoder("pyav"), get_decoder("decord")
    videos = [p for p in sorted(root.rglob("*.mp4")) if BROKEN not in p.name]
    assert len(videos) == 11  # 8 good, 2 validation, 1 short
    for path in videos:
        n = pyav.num_frames(path)
        assert decord.num_frames(path) == n
        every = pyav.read_frames(path, range(n))
        assert every.dtype == torch.uint8 and every.shape[-1] == 3
        assert torch.equal(decord.read_frames(path, range(n)), every)  # exact: max |difference| = 0
        some = [1, 3, n - 2]  # out-of-order access, across keyframes (one every 8 frames) and B-frames
        assert torch.equal(decord.read_frames(path, some), every[some])
        assert torch.equal(pyav.read_frames(path, some), every[some])


def test_decoder_selection_errors_are_one_sentence(monkeypatch):
    with pytest.raises(ValueError, match="unknown video decoder 'ffmpeg'; valid: pyav, decord"):
        get_decoder("ffmpeg")
    monkeypatch.setitem(sys.modules, "decord", None)  # as if decord were not installed
    with pytest.raises(ValueError, match="needs the decord package: pip install decord"):
        get_decoder("decord")


def test_clips_shapes_ranges_labels_and_counted_skips(standin):
    root, _ = standin
    with pytest.warns(UserWarning, match="1 of 11 annotated train videos are missing"):
        data = create_dataset("kinetics700", path=str(root), workers=2, **SMALL)
    assert data.sample_shape == (3, 8, 32, 32) and data.num_classes == 3 and len(data) == 10
    assert data.classes == sorted(CLASSES)
    with pytest.warns(UserWarning, match="skipping"):
        batches = draw(data.stream(4, seed=0), 5)  # 20 slots: both epochs meet the broken and the short video
    for x, y in batches:
        assert x.shape == (4, 3, 8, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
        assert y.dtype == torch.long and ((y >= 0) & (y < 3)).all()
    reasons = {k.rsplit("/", 1)[-1].split("_0")[0]: v for k, v in data.skipped.items()}
    assert set(reasons) == {MISSING, BROKEN, SHORT} and reasons[MISSING] == "missing"
    assert reasons[SHORT].startswith("too short: 6 frames") and reasons[BROKEN].startswith("unreadable")
    labels = {path.name.split("_0")[0]: int(y) for (path, _), y in zip(data.items, data.labels)}
    assert labels["vid00_a-b0"] == 0 and labels["vid01_a-b1"] == 1 and labels["vid02_a-b2"] == 2  # sorted CSV labels
    x, y = data.load([(i, (9, i), True) for i in range(len(data)) if data.items[i][0].name.startswith("vid")])
    assert y.tolist() == [labels[p.name.split("_0")[0]] for p, _ in data.items if p.name.startswith("vid")]


def test_eval_clip_is_the_centre_window_whatever_the_seed(standin):
    root, _ = standin
    data, cached = make(root), make(root, cache_frames=True, decoder="pyav")
    item = next(i for i, (p, _) in enumerate(data.items) if p.name.startswith("vid03"))  # 39 frames: 25 windows
    path, spec = data.items[item][0], ClipSpec(**SMALL)
    start = (39 - spec.span) // 2
    expected = to_unit(crop_frames(get_decoder("pyav").read_frames(path, range(start, start + 15, 2)), 32)[None])
    for key in ((3, 0), (3, 1), (7, 5)):
        assert torch.equal(data.load([(item, key, True)])[0], expected)
        assert torch.equal(cached.load([(item, key, True)])[0], expected)
    windows = {data.load([(item, (5, 0, 0, p), False)])[0].sum().item() for p in range(6)}
    assert len(windows) > 1  # training windows move with the slot
    a, b = data.reference(12, seed=1), cached.reference(12, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (12, 3, 8, 32, 32)
    assert not torch.equal(a[1], data.reference(12, seed=2)[1]) or not torch.equal(a[0], data.reference(12, seed=2)[0])
    video, labels = data.reference_video(12, seed=1, chunk=5)  # what FVD reads: the same clips, as uint8, in chunks
    assert video.dtype == torch.uint8 and torch.equal(to_unit(video.permute(0, 2, 3, 4, 1)), a[0]) and torch.equal(labels, a[1])
    assert data.decode_for_display(a[0]).shape == (64, 3, 32, 32)  # 8 videos x 8 frames, one video per grid row


def test_train_stream_resumes_exactly_whatever_workers_prefetch_and_known_bad_files(standin):
    root, _ = standin
    first = make(root, workers=0, prefetch=False)
    uninterrupted = draw(first.stream(3, seed=3), 8)  # 24 slots over 10 videos: three epochs
    killed = make(root, workers=2)
    part = killed.stream(3, seed=3)
    draw(part, 5)
    fresh = make(root, workers=3, decoder="decord" if _has_decord() else "pyav")  # knows no broken file yet
    resumed = fresh.stream(3, seed=999)
    resumed.load_state_dict(part.state_dict())
    for (x0, y0), (x1, y1) in zip(uninterrupted[5:], draw(resumed, 3)):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    # Two ranks split the world batch: together they are the one-rank stream of twice the batch.
    ranks = [make(root).stream(2, seed=3, rank=r, world_size=2) for r in range(2)]
    whole = make(root).stream(4, seed=3)
    for _ in range(3):
        (xa, ya), (xb, yb), (xw, yw) = ranks[0].next(), ranks[1].next(), whole.next()
        assert torch.equal(torch.cat([xa, xb]), xw) and torch.equal(torch.cat([ya, yb]), yw)


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def test_constructor_errors_are_one_sentence(standin, tmp_path):
    root, _ = standin
    with pytest.raises(ValueError, match="needs its videos"):
        create_dataset("kinetics700")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_dataset("kinetics700", path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no annotation CSV found"):
        create_dataset("kinetics700", path=str(tmp_path))
    with pytest.raises(ValueError, match="no rows of split 'test'"):
        make(root, split="test", annotations=str(root / "annotations" / "train.csv"))
    with pytest.raises(ValueError, match=r"unknown key\(s\) data.frame for kinetics700"):
        make(root, frame=8)
    with pytest.raises(ValueError, match="data.stride must be an integer >= 1"):
        make(root, stride=0)
    assert make(root, split="validate").labels.tolist() == [0, 1]  # validate.csv found, videos in val/
    assert kinetics_data_dir(str(root)) == "kinetics700" and kinetics_data_dir(str(tmp_path)) is None


# -- the latent cache -------------------------------------------------------------------------------------

def flowzoo_cli(*args: str, capsys) -> tuple[int, str, str]:
    from flowzoo.cli import main

    argv, sys.argv = sys.argv, ["flowzoo", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prepare_kinetics700_resumes_after_a_kill_and_trains_on_latents(standin, tmp_path, capsys):
    pytest.importorskip("diffusers")
    from imagenet_standins import tiny_vae

    from flowzoo.data.kinetics import prepare_video_latents
    from flowzoo.data.kinetics.prepare import read_manifest

    root, csv = standin
    vae = tiny_vae(tmp_path / "vae")
    kw = dict(**SMALL, clips_per_video=3, shard_size=4, batch_size=3, dtype="float32", progress=False, log=lambda s: None)
    full = tmp_path / "full"
    code, out, _ = flowzoo_cli("prepare", "kinetics700", "--data", str(root), "--annotations", str(csv), "--vae", str(vae),
                               "--out", str(full), "--frames", "8", "--resolution", "32", "--clips-per-video", "3",
                               "--shard-size", "4", "--batch-size", "3", "--dtype", "float32", capsys=capsys)
    assert code == 0 and "8 videos in 3 shards, 3 skipped" in out
    killed = tmp_path / "killed"
    first = prepare_video_latents(root, str(vae), killed, annotations=csv, stop_after=1, **kw)
    assert not first["complete"] and len(first["shards"]) == 1
    (killed / ".shard-00001.latents.npy.tmp-999").write_bytes(b"torn")  # what a kill mid-write leaves
    with pytest.raises(ValueError, match="unfinished"):
        create_dataset("kinetics700", path=str(killed))
    final = prepare_video_latents(root, str(vae), killed, annotations=csv, **kw)
    assert final["complete"] and final["channel_stats"] == read_manifest(full)["channel_stats"]
    assert sorted(s.split(":")[0] for s in final["skipped"]) == sorted(f"{v}_000000_000010" for v in (BROKEN, MISSING, SHORT))
    for k in range(3):
        for part in ("latents", "labels", "rows"):
            a, b = (np.load(d / f"shard-{k:05d}.{part}.npy") for d in (killed, full))
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.load(full / "shard-00000.latents.npy").shape == (4, 3, 2, 4, 8, 4, 4)  # (n, K, mean|std, C, F, h, w)
    with pytest.raises(ValueError, match="other settings"):
        prepare_video_latents(root, str(vae), killed, annotations=csv, **{**kw, "stride": 1})

    data = create_dataset("kinetics700", path=str(full), normalize="per_channel", decoder="pyav", workers=2)
    assert data.sample_shape == (4, 8, 4, 4) and data.num_classes == 3 and len(data) == 24
    uninterrupted = draw(data.stream(5, seed=3), 7)
    part = data.stream(5, seed=3)
    draw(part, 4)
    resumed = create_dataset("kinetics700", path=str(full), normalize="per_channel").stream(5, seed=0)
    resumed.load_state_dict(part.state_dict())
    for (x0, y0), (x1, y1) in zip(uninterrupted[4:], draw(resumed, 3)):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert torch.equal(data.reference(6, 1)[0], data.reference(6, 1)[0])
    video, labels = data.reference_video(4, seed=0)  # real clips, decoded from the videos the cache came from
    assert video.shape == (4, 3, 8, 32, 32) and video.dtype == torch.uint8 and labels.shape == (4,)
    assert data.decode_video(data.reference(2, 0)[0]).shape == (2, 3, 8, 32, 32)
    assert kinetics_data_dir(str(full)) == "kinetics700" and read_manifest(full)["frames"] == 8
    with pytest.raises(ValueError, match="holds resolution=32 but data.resolution=64"):
        create_dataset("kinetics700", path=str(full), resolution=64)


def test_cli_prepare_bad_input_is_one_sentence_and_exit_2(standin, tmp_path, capsys):
    root, csv = standin
    code, _, err = flowzoo_cli("prepare", "kinetics700", "--data", str(tmp_path / "nowhere"), "--vae", "x", "--out",
                               str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id\n")
    code, _, err = flowzoo_cli("prepare", "kinetics700", "--data", str(root), "--annotations", str(bad), "--vae", "x",
                               "--out", str(tmp_path / "o"), capsys=capsys)
    assert code == 2 and "not a Kinetics annotation CSV" in err and len(err.strip().splitlines()) == 1
    code, _, err = flowzoo_cli("prepare", "kinetics700", "--data", str(root), "--vae", "x", "--out", str(tmp_path / "o"),
                               "--clips-per-video", "2", capsys=capsys)
    assert code == 2 and "must be odd" in err
