"""Fashion-MNIST plugin: the IDX reader, scaling and padding, the split, and one-sentence errors for bad files.

Every test writes its own tiny IDX files (tests/fashion_standins.py); none needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from fashion_standins import HELDOUT_OFFSET, IMAGE_FILES, LABEL_FILES, idx_bytes, tiny_images, write_fashion_root, write_idx
from faults_helpers import assert_one_sentence
from flowzoo.config import resolve
from flowzoo.data import create_dataset, dataset_from_config
from flowzoo.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST, to_model_space
from flowzoo.data.idx import IDXError, parse_idx, read_idx
from test_cli import flowzoo

WHERE = "dataset-fashion-mnist"  # every bad-file sentence says where to get good files


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the IDX reader ----------------------------------------------------------------------------------

@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_reads_images_and_labels(tmp_path, gzipped):
    images, labels = tiny_images(5)
    read_images = read_idx(write_idx(tmp_path / "images", images, gzipped), 3)
    read_labels = read_idx(write_idx(tmp_path / "labels", labels, gzipped), 1)
    assert read_images.shape == (5, 28, 28) and read_images.dtype == np.uint8
    assert np.array_equal(read_images, images) and np.array_equal(read_labels, labels)


def test_idx_header_is_big_endian_as_defined():
    data = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    assert data[:4] == b"\x00\x00\x08\x03"  # magic 0x00000803
    assert data[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    assert parse_idx(data, 3).shape == (2, 3, 4)


@pytest.mark.parametrize("data, message", [
    (idx_bytes(np.zeros(3, np.uint8)), "magic number is 0x00000801, not 0x00000803"),  # labels read as images
    (b"\x00\x00\x0d\x03" + bytes(12), "magic number is 0x00000D03"),  # float elements
    (b"\x01\x00\x08\x03" + bytes(12), "magic number is 0x01000803"),
    (b"\x00\x00", "shorter than the 4-byte IDX header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header is cut short"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], "(the file is truncated)"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"\x00", "longer than its header says"),
])
def test_idx_rejects_malformed_data(data, message):
    with pytest.raises(IDXError) as caught:
        parse_idx(data, 3)
    assert message in str(caught.value)


# -- the dataset ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gzipped", [False, True])
def test_pixels_scale_to_minus_one_one_and_pad_with_background(tmp_path, gzipped):
    data = FashionMNIST(path=write_fashion_root(tmp_path / "fm", n_train=12, n_heldout=11, gzipped=gzipped))
    x, y = data.train_tensors()
    images, labels = tiny_images(12)
    assert x.shape == (12, 1, 32, 32) and x.dtype == torch.float32 and data.sample_shape == (1, 32, 32)
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64))) and data.num_classes == 10
    inner = x[:, 0, 2:30, 2:30]
    assert torch.allclose(inner, torch.from_numpy(images).float() / 127.5 - 1, atol=0, rtol=0)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, 0][:, border] == -1).all()  # the pad is background (pixel 0), not grey
    assert x.min() >= -1 and x.max() <= 1
    assert to_model_space(torch.tensor([[[0, 255] + [0] * 26] * 28], dtype=torch.uint8))[0, 0, 2, 2:4].tolist() == [-1, 1]


def test_plain_file_is_read_before_a_gzipped_one(tmp_path):
    root = write_fashion_root(tmp_path / "fm", n_train=10, n_heldout=10, gzipped=True)
    images, labels = tiny_images(10, offset=7)
    write_idx(root / IMAGE_FILES["train"], images)
    write_idx(root / LABEL_FILES["train"], labels)
    assert torch.equal(FashionMNIST(path=root).pixels("train")[0], torch.from_numpy(images))


def test_heldout_is_the_t10k_set_and_never_trained_on(tmp_path):
    data = FashionMNIST(path=write_fashion_root(tmp_path / "fm", n_train=20, n_heldout=30))
    heldout_pixels = tiny_images(30, offset=HELDOUT_OFFSET)[0]
    x, y = data.heldout_tensors()
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(heldout_pixels).float() / 127.5 - 1)
    assert torch.equal(data.reference()[0], x) and torch.equal(data.reference(30)[1], y)
    sub_x, _ = data.reference(8, seed=3)
    assert torch.equal(sub_x, data.reference(8, seed=3)[0]) and not torch.equal(sub_x, data.reference(8, seed=4)[0])
    stream = data.stream(7, seed=0)
    trained = torch.cat([stream.next()[0] for _ in range(6)])  # two epochs of 20 (and 2 more)
    assert not (trained[:, None] == x[None]).flatten(2).all(dim=2).any()  # no held-out image in training batches
    with pytest.raises(ValueError, match="1..30"):
        data.reference(31)


def test_stream_batches_are_scaled_padded_and_resumable(tmp_path):
    data = FashionMNIST(path=write_fashion_root(tmp_path / "fm", n_train=20, n_heldout=10))
    stream = data.stream(8, seed=1)
    first = [stream.next() for _ in range(2)]
    resumed = data.stream(8, seed=99)
    resumed.load_state_dict(stream.state_dict())
    later = data.stream(8, seed=1)
    expected = [later.next() for _ in range(4)][2:]
    for (a, b), (c, d) in zip([resumed.next() for _ in range(2)], expected):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert first[0][0].shape == (8, 1, 32, 32) and first[0][0].dtype == torch.float32 and first[0][1].dtype == torch.long


def test_class_means_are_each_class_mean_image(tmp_path):
    data = FashionMNIST(path=write_fashion_root(tmp_path / "fm", n_train=30, n_heldout=10))
    x, y = data.train_tensors()
    means = data.class_means()
    assert means.shape == (10, 1, 32, 32)
    assert torch.allclose(means[3], x[y == 3].mean(dim=0), atol=1e-6)


def test_registered_and_resolved_by_name():
    cfg = resolve(data="fashion_mnist", objective="flow_matching")
    assert cfg["data"] == {"name": "fashion_mnist"} and cfg["backbone"]["name"] == "DiT-tiny/8"
    assert FashionMNIST.__init__.__defaults__[0] == DEFAULT_ROOT == "/usr/share/datasets/fashion-mnist"


# -- bad files: one sentence naming the file, what is wrong and where to get good ones ---------------------

def damage_missing(root):
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    return root / "t10k-labels-idx1-ubyte", "does not exist"


def damage_magic(root):
    path = root / "train-images-idx3-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[3] = 0x01
    path.write_bytes(gzip.compress(bytes(data)))
    return path, "magic number is 0x00000801, not 0x00000803"


def damage_truncated(root):
    path = root / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) - 100]))
    return path, "the file is truncated"


def damage_torn_gzip(root):
    path = root / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    return path, "gzip stream ends early"


def damage_label_count(root):
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gzipped=True)
    return root / "t10k-images-idx3-ubyte.gz", "labels (they must match"


DAMAGES = [damage_missing, damage_magic, damage_truncated, damage_torn_gzip, damage_label_count]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_bad_file_is_one_sentence(tmp_path, damage):
    root = write_fashion_root(tmp_path / "fm", n_train=12, n_heldout=12, gzipped=True)
    path, what = damage(root)
    with pytest.raises(ValueError) as caught:
        create_dataset("fashion_mnist", path=str(root))
    message = str(caught.value)
    assert str(path) in message and what in message and WHERE in message and "zalandoresearch" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")


def test_missing_folder_and_unknown_key(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'nowhere'} does not exist; .*{WHERE}"):
        FashionMNIST(path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown key.*data.root for fashion_mnist; valid: path"):
        FashionMNIST(path=tmp_path, root="x")


@pytest.mark.parametrize("damage", [damage_missing, damage_truncated], ids=lambda f: f.__name__)
def test_cli_bad_file_exits_with_one_sentence(tmp_path, damage, capsys):
    root = write_fashion_root(tmp_path / "fm", n_train=12, n_heldout=12, gzipped=True)
    path, what = damage(root)
    out = tmp_path / "run"
    code, _, err = flowzoo("run", "--objective", "flow_matching", "--data", "fashion_mnist", "--steps", "1",
                           "--threads", "1", "--set", f"data.path={root}", "--out", str(out), "--quiet", capsys=capsys)
    assert code == 2
    assert_one_sentence(err, str(path), what, WHERE)
    assert not out.exists()  # the files are checked before the run writes anything


def test_cli_trains_and_samples_on_the_files(tmp_path, capsys):
    root = write_fashion_root(tmp_path / "fm", n_train=24, n_heldout=20)
    out = tmp_path / "run"
    code, _, err = flowzoo("run", "--objective", "flow_matching", "--data", "fashion_mnist", "--steps", "2",
                           "--batch-size", "8", "--threads", "1", "--set", f"data.path={root}", "--set",
                           "eval.num_samples=20", "--set", "eval.previews=false", "--out", str(out), "--quiet",
                           capsys=capsys)
    assert code == 0, err
    assert (out / "result.json").is_file() and (out / "samples" / "euler-nfe1.png").is_file()


# -- the fashion suite -------------------------------------------------------------------------------

def test_the_suite_points_every_cell_at_a_copy_of_the_files_given_with_data(tmp_path):
    """`flowzoo bench fashion --data FOLDER` reaches the dataset as data.path, the key every on-disk set uses."""
    from flowzoo.bench.suite import get_suite, with_overrides

    root = write_fashion_root(tmp_path / "fm", n_train=12, n_heldout=12)
    suite = with_overrides(get_suite("fashion"), data=str(root))
    cfg = suite.cells()[0].resolved_config(tmp_path)
    data = dataset_from_config(cfg["data"])
    assert data.root == root and len(data.pixels("train")[0]) == 12


def test_a_dry_run_without_the_files_estimates_from_the_datasets_own_shape(tmp_path):
    from flowzoo.bench.estimate import data_shape
    from flowzoo.bench.suite import get_suite, with_overrides

    suite = with_overrides(get_suite("fashion"), data=str(tmp_path / "nowhere"))
    shape, classes, source = data_shape(suite.cells()[0].resolved_config(tmp_path))
    assert (shape, classes, source) == ((1, 32, 32), 10, "assumed")
