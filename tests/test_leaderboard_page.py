"""The leaderboard page in a real browser (headless Chromium, 1400 px wide): the overview's rows and values are
the records', columns sort on click, wide tables scroll inside their box, per-seed values stay on one line,
figures sit beside their tables, and a screenshot has the window's size and is not blank.

CI installs Debian's `chromium` (.ci/run); elsewhere the test skips, saying so."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from flowzoo.leaderboard.build import build_leaderboard
from flowzoo.leaderboard.record import write_record
from test_leaderboard import record, variant  # noqa: F401  (record: a module fixture, one 12-step toy run)

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install chromium (CI does, in .ci/run)")

# unit-a: mf is lower than fm on every seed at 1 NFE (resolved better) and higher at 2 NFE (resolved worse)
UNIT_A = {"fm": [(0.300, 0.200), (0.340, 0.100), (0.290, 0.150), (0.310, 0.120), (0.330, 0.180)],
          "mf": [(0.100, 0.400), (0.140, 0.450), (0.120, 0.410), (0.110, 0.380), (0.130, 0.420)]}
# unit-b: three methods, nothing resolved against fm (the differences change sign from seed to seed)
UNIT_B = {"fm": [(0.50, 0.40), (0.60, 0.30), (0.55, 0.35)], "mf": [(0.58, 0.33), (0.52, 0.41), (0.56, 0.36)],
          "sc": [(0.57, 0.36), (0.54, 0.34), (0.61, 0.37)]}

PROBE = """<script>window.addEventListener('load', function () {
  var out = {}, t = document.getElementById('overview');
  function labels() { return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[0].textContent; }); }
  var th = t.querySelector('th[data-col="3"]');  // unit-a, 1 NFE
  th.click(); out.asc = labels(); th.click(); out.desc = labels();
  out.pageWidth = document.documentElement.scrollWidth; out.viewport = window.innerWidth;
  var seeds = Array.prototype.filter.call(document.querySelectorAll('td.n'), function (td) { return /\\d \\/ \\d/.test(td.textContent); });
  out.perSeed = seeds.map(function (td) { var r = document.createRange(); r.selectNodeContents(td);
    return {text: td.textContent, lines: r.getClientRects().length}; });
  var box = document.querySelector('.group .scroll');
  out.scrolls = box.scrollWidth > box.clientWidth;
  var tables = document.querySelector('.group .tables').getBoundingClientRect();
  var figure = document.querySelector('.group .figures img').getBoundingClientRect();
  out.figure = {left: figure.left, top: figure.top, width: figure.width};
  out.tables = {right: tables.right, top: tables.top, bottom: tables.bottom};
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


class Tables(HTMLParser):
    """The rendered overview: rows of (tag, attributes, text) cells."""

    def __init__(self):
        super().__init__()
        self.rows, self._in, self._cell, self._depth = [], False, None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "overview":
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = [tag, attrs, ""]
            self.rows[-1].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data


def browser(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium at 1400 x 900 on a page (no sandbox: CI runs as root; the page is ours)."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--window-size=1400,900", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def built(record, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("page")
    for suite, values in (("unit-a", UNIT_A), ("unit-b", UNIT_B)):
        for method, rows in values.items():
            for seed, (one, two) in enumerate(rows):
                rec = variant(record, method=method, seed=seed, swd={1: one, 2: two})
                rec["benchmark"] = suite
                write_record(root / "results" / suite / f"{method}-{seed}.json", rec)
    build_leaderboard(root / "results", root / "lb")
    return root


def t_interval(xs):
    from scipy.stats import t

    half = t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return statistics.mean(xs) - half, statistics.mean(xs) + half


def test_the_overview_in_the_browser_holds_the_records_numbers_and_sorts(built):
    page = (built / "lb" / "index.html").read_text()
    (built / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))
    dom = browser("--virtual-time-budget=5000", "--dump-dom", (built / "probe.html").as_uri(), profile=built / "profile").stdout
    tables = Tables()
    tables.feed(dom)
    head, columns, *body = tables.rows
    assert [c[2] for c in head][1:] == ["unit-b · toy:8gaussians", "unit-a · toy:8gaussians"]  # more methods first
    assert [c[2].replace("\u2195", "").strip() for c in columns] == ["swd @ 1 NFE", "swd @ 2 NFE"] * 2
    order = [("unit-b", 1), ("unit-b", 2), ("unit-a", 1), ("unit-a", 2)]
    rows = {r[0][2]: r[1:] for r in body}
    assert list(rows) == ["fm", "mf", "sc"]  # in both tables first, then by first appearance
    for method in rows:
        for (suite, nfe), (_, attrs, text) in zip(order, rows[method]):
            values = {"unit-a": UNIT_A, "unit-b": UNIT_B}[suite].get(method)
            if values is None:
                assert text == "" and attrs["data-v"] == ""
                continue
            xs = [v[nfe - 1] for v in values]
            lo, hi = t_interval(xs)
            assert float(attrs["data-v"]) == pytest.approx(statistics.mean(xs), abs=1e-12)
            assert text.startswith(f"{statistics.mean(xs):.3f} [{lo:.3f}, {hi:.3f}]"), text
    marks = {m: [a.get("class", "") for _, a, _ in cells] for m, cells in rows.items()}
    assert marks["fm"] == ["n ref", "n ref", "n ref", "n ref"]  # every table's reference row
    assert marks["mf"] == ["n", "n", "n better", "n worse"] and marks["sc"][:2] == ["n", "n"]
    assert rows["mf"][2][2].endswith("better") and rows["mf"][3][2].endswith("worse")

    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert probe["asc"] == ["mf", "fm", "sc"] and probe["desc"] == ["fm", "mf", "sc"]  # sc has no unit-a cell: last
    assert probe["pageWidth"] <= probe["viewport"] and probe["scrolls"]  # the wide table scrolls, not the page
    assert probe["perSeed"] and all(c["lines"] == 1 for c in probe["perSeed"]), probe["perSeed"]
    fig, tab = probe["figure"], probe["tables"]
    assert fig["left"] >= tab["right"] and tab["top"] - 50 <= fig["top"] < tab["bottom"] and fig["width"] > 250  # beside


def test_a_screenshot_at_1400_px_has_the_windows_size_and_content(built):
    from PIL import Image, ImageStat

    shot = built / "page.png"
    browser(f"--screenshot={shot}", (built / "lb" / "index.html").as_uri(), profile=built / "profile")
    with Image.open(shot) as image:
        assert image.size == (1400, 900)
        gray = image.convert("L")
        assert ImageStat.Stat(gray).stddev[0] > 20  # text and tables, not a blank page
        assert sum(gray.histogram()[:128]) > 0.005 * 1400 * 900  # dark pixels: rendered text
