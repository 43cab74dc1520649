"""leaderboard/reported.yaml: a strict schema, and every committed row loads with a real source."""

import pytest

from flowzoo.config import ConfigError
from flowzoo.leaderboard.reported import DEFAULT_REPORTED, load_reported, repository_paths

SECTION = """\
imagenet256:
  benchmark: imagenet256
  metric: FID
  columns: {nfe1: "1 NFE"}
  rows:
"""


def write(tmp_path, rows):
    path = tmp_path / "reported.yaml"
    path.write_text(SECTION + "".join(f"    - {r}\n" for r in rows))
    return path


def test_an_unquoted_comma_in_a_flow_mapping_is_refused_naming_the_key_and_entry(tmp_path):
    # The committed bug: the comma ends `model`'s value and leaves a stray key "alpha-Flow's run)".
    path = write(tmp_path, ["{method: MeanFlow, model: B/2 (no cfg, alpha-Flow's run), nfe1: 43.1, source: paper}"])
    with pytest.raises(ConfigError) as err:
        load_reported(path)
    msg = str(err.value)
    assert "unknown key \"alpha-Flow's run)\"" in msg and "imagenet256.rows[0]" in msg and "'MeanFlow'" in msg
    assert "\n" not in msg


def test_the_quoted_entry_keeps_its_whole_value(tmp_path):
    path = write(tmp_path, ["{method: MeanFlow, model: \"B/2 (no cfg, alpha-Flow's run)\", nfe1: 43.1, source: paper}"])
    (section,) = load_reported(path)
    assert section.rows[0]["model"] == "B/2 (no cfg, alpha-Flow's run)"


def test_an_unknown_section_key_is_refused(tmp_path):
    path = tmp_path / "reported.yaml"
    path.write_text(SECTION.replace("metric: FID", "metric: FID\n  metrics: FID") + "    - {method: a, source: b}\n")
    with pytest.raises(ConfigError, match="section 'imagenet256' has unknown key 'metrics'"):
        load_reported(path)


@pytest.mark.parametrize("source", ["", "  ", None])
def test_an_empty_source_is_refused(tmp_path, source):
    row = "{method: MeanFlow, nfe1: 1.0}" if source is None else f"{{method: MeanFlow, nfe1: 1.0, source: '{source}'}}"
    with pytest.raises(ConfigError, match="needs a method and a non-empty source"):
        load_reported(write(tmp_path, [row]))


def test_a_source_naming_a_missing_repository_file_is_refused(tmp_path):
    row = "{method: ECT, nfe1: 3.6, source: 'project notes (shared/reference/reported.yaml)'}"
    with pytest.raises(ConfigError, match="cites shared/reference/reported.yaml, which is not in the repository"):
        load_reported(write(tmp_path, [row]))
    # A file that is in the repository is a fine citation.
    (section,) = load_reported(write(tmp_path, ["{method: ECT, nfe1: 3.6, source: 'see leaderboard/reported.yaml'}"]))
    assert section.rows[0]["method"] == "ECT"


def test_urls_and_arxiv_ids_are_not_taken_for_repository_paths():
    assert repository_paths("github.com/locuslab/ect README; arXiv 2406.14548, Table 2") == []
    assert repository_paths("https://example.org/a/b.html") == []
    assert repository_paths("notes (docs/x.md), and benchmarks/y.py") == ["docs/x.md", "benchmarks/y.py"]


def test_every_committed_row_loads_and_cites_a_source():
    sections = load_reported(DEFAULT_REPORTED)
    assert {s.key for s in sections} >= {"imagenet256", "cifar10_uncond", "alpha_flow_ablation_B2_400k"}
    for section in sections:
        for row in section.rows:
            assert str(row["source"]).strip(), row
    models = [r.get("model") for s in sections for r in s.rows]
    assert "B/2 (no cfg, alpha-Flow's run)" in models and "B/2 (no cfg" not in models
