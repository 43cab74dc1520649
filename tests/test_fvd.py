"""FVD: the Frechet distance on features of a stand-in TorchScript I3D, loaded through the real I3D's code path.

The stand-in is a tiny random 3-D conv net with the StyleGAN-V I3D's call convention
``net(clips, rescale=..., resize=..., return_features=...)``, scripted and saved with torch.jit.save,
then given as data.fvd.weights exactly like i3d_torchscript.pt.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from flowzoo.eval import FVD, create_metric, metrics_for
from flowzoo.eval.fid import sha256_file
from flowzoo.eval.frechet import frechet_distance, gaussian_stats
from flowzoo.eval.fvd import VIDEO_EXTRACTORS, WEIGHTS_ENV, to_uint8
from video_standins import write_standin_i3d

SHAPE = (3, 4, 16, 16)  # (C, F, H, W)


@pytest.fixture(scope="module")
def standin_path(tmp_path_factory):
    return write_standin_i3d(tmp_path_factory.mktemp("i3d") / "standin_i3d.pt")


def moving_gratings(n: int, seed: int, shape=SHAPE) -> torch.Tensor:
    """Smooth clips in [-1, 1]: per clip a sinusoidal grating with random orientation, phase and drift."""
    g = torch.Generator().manual_seed(seed)
    c, f, h, w = shape
    k = 0.3 + 0.5 * torch.rand(n, 2, generator=g)
    vel, phase = torch.randn(n, 2, generator=g), 2 * math.pi * torch.rand(n, c, generator=g)
    tt, yy, xx = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    arg = (k[:, 0, None, None, None] * (xx - vel[:, 0, None, None, None] * tt)
           + k[:, 1, None, None, None] * (yy - vel[:, 1, None, None, None] * tt))
    return 0.8 * torch.sin(arg[:, None] + phase[:, :, None, None, None])


class FakeClips:
    """The dataset surface FVD uses: name, sample_shape, num_classes, reference(n, seed), fvd settings."""

    name = "fake_clips"
    num_classes = 0

    def __init__(self, fvd: dict | None = None, shape=SHAPE):
        self.sample_shape, self.fvd = shape, dict(fvd or {})

    def reference(self, n: int, seed: int = 0):
        return moving_gratings(n, 1000 + seed, self.sample_shape), torch.zeros(n, dtype=torch.long)


def settings(path, **extra):
    return {"weights": str(path), "num_frames": 4, "num_real": 64, "num_generated": 64, "batch_size": 32, **extra}


def test_fvd_is_the_closed_form_on_the_extractor_features(standin_path):
    """The metric equals the Frechet formula computed directly (scipy sqrtm) on the stand-in's features."""
    data = FakeClips(settings(standin_path))
    generated = moving_gratings(64, 7) * 0.7  # a different, nearby distribution
    fvd = create_metric("fvd", seed=0)(generated, None, data)["fvd"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in torch >= 2.10
        net = torch.jit.load(str(standin_path))
    with torch.no_grad():
        f_gen = net(to_uint8(generated), rescale=True, resize=True, return_features=True).double().numpy()
        f_real = net(to_uint8(data.reference(64, 0)[0]), rescale=True, resize=True, return_features=True).double().numpy()
    mu1, s1 = f_gen.mean(0), np.cov(f_gen, rowvar=False)
    mu2, s2 = f_real.mean(0), np.cov(f_real, rowvar=False)
    direct = float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2))))
    assert fvd > 0
    assert fvd == pytest.approx(direct, rel=1e-6)
    assert fvd == pytest.approx(frechet_distance(*gaussian_stats(f_gen), *gaussian_stats(f_real)), rel=1e-12)


def test_same_vs_same_near_zero_and_real_vs_noise_large(standin_path):
    data = FakeClips(settings(standin_path, floor=True))
    metric = FVD(seed=0)
    same = metric(data.reference(64, 0)[0], None, data)["fvd"]  # the very clips of the reference
    floor = metric.reference(data)["real/fvd"]  # two disjoint draws of real clips
    noise = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    far = metric(noise, None, data)["fvd"]
    assert same < 1e-8
    assert floor < 0.25 * far, (floor, far)  # measured: floor / far ~ 0.07


def test_missing_weights_is_one_sentence_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    clips = moving_gratings(4, 0)
    with pytest.raises(FileNotFoundError, match=r"data\.fvd\.weights.*FLOWZOO_I3D") as info:
        FVD()(clips, None, FakeClips())
    message = str(info.value)
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FVD()(clips, None, FakeClips({"weights": str(tmp_path / "i3d_torchscript.pt")}))
    with pytest.raises(FileNotFoundError, match="data.fvd.weights"):
        FVD().check(FakeClips())  # what a run can call before training
    with pytest.raises(ValueError, match="unknown key.*data.fvd.weigths"):
        FVD()(clips, None, FakeClips({"weigths": "x"}))


def test_weights_from_environment_and_sha256_recorded(standin_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(standin_path))
    data = FakeClips({"num_frames": 4, "num_real": 32, "num_generated": 32})
    metric = FVD(seed=0)
    with pytest.warns(UserWarning, match="biased upward"):
        metric(moving_gratings(16, 5), None, data)
    info = metric.info(data)
    assert info["extractor"] == "stylegan_v_i3d"
    assert info["extractor_weights"] == str(standin_path)
    assert info["extractor_weights_sha256"] == sha256_file(standin_path) and len(info["extractor_weights_sha256"]) == 64
    assert (info["num_frames"], info["num_real"], info["num_generated"]) == (4, 32, 16)
    assert info["clip_shape"] == list(SHAPE)
    assert "stylegan_v_i3d" in VIDEO_EXTRACTORS.names()


def test_supports_video_only_and_latents_need_decode(standin_path):
    metric = FVD()
    assert metric.supports(FakeClips())
    assert not metric.supports(FakeClips(shape=(3, 16, 16)))  # images
    latents = FakeClips(shape=(4, 4, 8, 8))
    assert not metric.supports(latents)
    with pytest.raises(ValueError, match="no decode_video"):
        FVD(extractor=lambda x: x.float().mean(dim=(2, 3, 4)))(torch.zeros(2, 4, 4, 8, 8), None, latents)
    assert "fvd" in metrics_for(FakeClips(), seed=0) and "fvd" not in metrics_for(FakeClips(shape=(3, 16, 16)), seed=0)


def test_latent_clips_decoded_and_real_clips_from_reference_video(standin_path):
    """Kinetics latents: generated latents go through decode_video, real clips come from reference_video."""
    calls = []

    class Latents(FakeClips):
        def decode_video(self, z):  # a VAE stand-in: latent clips -> uint8 pixel clips
            calls.append(("decode", tuple(z.shape)))
            return to_uint8(moving_gratings(len(z), 11))

        def reference_video(self, n, seed=0):
            calls.append(("reference_video", n))
            return to_uint8(moving_gratings(n, 1000 + seed)), torch.zeros(n, dtype=torch.long)

        def reference(self, n, seed=0):
            raise AssertionError("FVD must take real clips from reference_video when there is one")

    data = Latents(settings(standin_path, num_real=32, num_generated=32), shape=(4, 4, 8, 8))
    metric = FVD()
    assert metric.supports(data)
    fvd = metric(torch.randn(32, 4, 4, 8, 8), None, data)["fvd"]
    assert math.isfinite(fvd) and fvd > 0
    assert ("reference_video", 32) in calls and ("decode", (32, 4, 4, 8, 8)) in calls
    assert metric.info(data)["reference"].startswith("reference_video(32")


def test_injected_callable_frames_cut_and_too_few_frames(standin_path):
    seen = []

    def extractor(clips):
        seen.append((clips.dtype, tuple(clips.shape)))
        return clips.float().mean(dim=(2, 3, 4))  # (N, 3) per-channel means

    data = FakeClips({"num_frames": 2, "num_real": 16, "num_generated": 16, "batch_size": 8})
    out = FVD(extractor=extractor)(moving_gratings(16, 1), None, data)
    assert math.isfinite(out["fvd"]) and all(s == (torch.uint8, (8, 3, 2, 16, 16)) for s in seen)
    with pytest.raises(ValueError, match="set data.fvd.num_frames to at most 4"):
        FVD(extractor=extractor)(moving_gratings(16, 1), None, FakeClips({"num_frames": 16, "num_generated": 16}))


def test_protocol_records_reference_kind_and_clips_so_kinds_are_never_ranked_together(standin_path, tmp_path):
    """Real clips and VAE reconstructions as the reference, and the clip stride, size and frames, are in the
    protocol: records of different kinds get different protocol ids; the clips say whether they are fvd2048_16f."""
    from types import SimpleNamespace

    from flowzoo.data.kinetics.latents import KineticsLatents
    from flowzoo.leaderboard.aggregate import group_records
    from flowzoo.leaderboard.record import protocol_id

    class Kinetics(FakeClips):  # the Kinetics datasets' surface: a clip spec and the reference's kind
        def __init__(self, kind, stride=2, **kw):
            super().__init__(**kw)
            self.kind, self.spec = kind, SimpleNamespace(frames=SHAPE[1], stride=stride, resolution=SHAPE[2])

        def reference_kind(self):
            return self.kind

    infos = {}
    for kind in ("real clips", "VAE reconstructions"):
        data = Kinetics(kind, fvd=settings(standin_path, num_real=32, num_generated=32))
        metric = FVD()
        metric(moving_gratings(32, 5), None, data)
        infos[kind] = metric.info(data)
    real, recon = infos["real clips"], infos["VAE reconstructions"]
    assert real["reference_kind"] == "real clips" and recon["reference_kind"] == "VAE reconstructions"
    assert real["clip"] == {"frames": 4, "stride": 2, "size": [16, 16]}
    assert real["clip_protocol"].startswith("not StyleGAN-V's fvd2048_16f") and "stride 2, 16x16 px" in real["clip_protocol"]
    records = [{"benchmark": "k", "data": "kinetics700", "seed": 0, "method": "m", "preset": "m", "schedule": None,
                "evaluations": [], "protocol": {"metrics": {"fvd": info}}} for info in (real, recon)]
    assert protocol_id(records[0]) != protocol_id(records[1]) and len(group_records(records)) == 2

    published = Kinetics("real clips", stride=1, fvd=settings(standin_path, num_real=2048, num_generated=2048, num_frames=16),
                         shape=(3, 16, 8, 8))
    from flowzoo.eval.fvd import clip_protocol, clip_protocol_text

    clip = clip_protocol(published, FVD().settings(published), {})
    assert clip == {"frames": 16, "stride": 1, "size": [16, 16]}  # size from the spec's resolution
    assert clip_protocol_text(clip, FVD().settings(published), "real clips").startswith("StyleGAN-V fvd2048_16f")
    assert clip_protocol_text(clip, FVD().settings(published), "VAE reconstructions").startswith("not StyleGAN-V's")

    cache = KineticsLatents.__new__(KineticsLatents)  # a latent cache: real clips while its videos are there
    cache.manifest = {"data": str(tmp_path)}
    assert cache.reference_kind() == "real clips"
    cache.manifest = {"data": str(tmp_path / "gone")}
    assert cache.reference_kind() == "VAE reconstructions"
