"""README.md's "Python API" block runs as it stands (in a temporary folder), and `import flowzoo` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    text = README.read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_python_api_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the block writes runs/api-demo
    namespace: dict = {"__name__": "readme_api"}
    exec(compile(api_block(), str(README), "exec"), namespace)
    printed = capsys.readouterr().out

    import flowzoo

    run = namespace["run"]
    assert isinstance(run, flowzoo.Run) and run.path == (tmp_path / "runs" / "api-demo").resolve() and run.step == 100
    assert run.config["objective"]["name"] == "meanflow" and run.dataset.name == "digits"
    assert (run.path / "three-digits.png").is_file() and (run.path / "result.json").is_file()
    # The metric on 300 fresh 1-NFE draws of seed 0 is result.json's 1-NFE row, and both were printed.
    measured = flowzoo.create_metric("digits")(namespace["x"], namespace["labels"], run.dataset)
    assert measured == pytest.approx(run.result["results"]["meanflow@1"])
    assert printed.count(str(run.result["results"]["meanflow@1"]["fd"])) == 2
    # The own-network objective trained: a preset around any module with forward(z, t, h, y).
    assert namespace["objective"].net is namespace["net"] and torch.isfinite(namespace["loss"])

    x, labels = run.sample(nfe=2, labels=[3, 3, 7])
    assert x.shape == (3, 1, 8, 8) and labels.tolist() == [3, 3, 7]
    assert torch.equal(run.sample(nfe=1, num_samples=4)[1], torch.tensor([0, 1, 2, 3]))  # i mod classes
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        run.sample(labels=[11])
    assert run.evaluate(nfe=1)["results"]["meanflow@1"] == pytest.approx(run.result["results"]["meanflow@1"])


def test_load_run_of_a_folder_that_is_no_run_is_one_sentence(tmp_path):
    import flowzoo
    from flowzoo.config import ConfigError

    with pytest.raises(ConfigError, match="holds no checkpoints/latest.pt"):
        flowzoo.load_run(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        flowzoo.load_run(tmp_path / "missing.pt")


def test_import_flowzoo_imports_no_torch():
    code = "import sys, flowzoo; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
