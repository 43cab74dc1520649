"""Sample figures say what made them: a title (objective, sampler, NFE, step, seed) and class labels."""

import torch
from PIL import Image

from flowzoo.data import create_dataset
from flowzoo.eval.digits_metrics import balanced_labels
from flowzoo.eval.plots import figure_title, image_grid
from flowzoo.pipeline.evaluate import class_names, write_samples_figure


def test_the_title_names_objective_sampler_nfe_step_and_seed():
    title = figure_title("alphaflow", "meanflow", 2, 300, 7)
    assert title == "alphaflow | sampler meanflow | 2 NFE | step 300 | seed 7"
    assert figure_title(None, "euler", 1, None, 0, guidance=2.5) == "sampler euler | 1 NFE | seed 0 | CFG 2.5"


def test_a_digits_grid_gets_a_title_band_and_one_class_header_per_column(tmp_path):
    digits = create_dataset("digits")
    x = digits.heldout_tensors()[0][:30]
    labels = balanced_labels(30, 10)  # 0..9, 0..9, ...: each column of a 10-wide grid is one class
    bare = image_grid(x, nrow=10)
    path = write_samples_figure(x, digits, tmp_path / "grid.png", 0, figure_title("fm", "euler", 1, 5, 0), labels)
    img = Image.open(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert img.height == bare.height + 18 + 16 and img.width >= bare.width  # title band + column headers
    assert class_names(digits, labels)[:3] == ["0", "1", "2"]


def test_labels_that_vary_down_a_column_are_tagged_per_cell_not_as_headers(tmp_path):
    digits = create_dataset("digits")
    x = digits.heldout_tensors()[0][:20]
    labels = torch.arange(20) % 7  # a 10-wide grid: column 0 holds classes 0 and 3
    path = write_samples_figure(x, digits, tmp_path / "grid.png", 0, "t", labels)
    assert Image.open(path).height == image_grid(x, nrow=10).height + 18  # title only, no header row


def test_a_toy_scatter_is_written_with_its_title(tmp_path):
    toy = create_dataset("toy:8gaussians")
    x, _ = toy.reference(200, seed=0)
    path = write_samples_figure(x, toy, tmp_path / "s.png", 0, figure_title("meanflow", "meanflow", 1, 10, 0))
    img = Image.open(path)
    assert img.width > 300 and img.height > 300
