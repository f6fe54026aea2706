"""The benchmark figure (families, hardest videos, scores) and `amodalkit report`'s page in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run
from PIL import Image

from amodalkit.tables.benchmark import run_benchmark
from amodalkit.tables.config import benchmark_config
from amodalkit.tables.plan import plan_rows
from amodalkit.tables.report import figure_rows, pick_figure_videos
from amodalkit.viz import FALSE_NEGATIVE, FALSE_POSITIVE, LABEL_WIDTH

DOCS_RESULTS = Path(__file__).parents[2] / "docs" / "results" / "seed0-ablations"  # its shards are not kept
#: the results table's header colour in the page's CSS (th{background:#e4ecf7})
HEADER = (0xE4, 0xEC, 0xF7)


@pytest.fixture(scope="module")
def rules(cg_savos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A benchmark of the rule-based methods (nothing to train) on the 6 tiny test videos."""
    out = tmp_path_factory.mktemp("rules") / "results"
    run_benchmark(benchmark_config(cg_savos, out, "convex,temporal", device="cpu", quiet=True))
    return out


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (CI runs as root on Debian)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and apt-get is not here to install it "
                    "(on Debian: apt-get install chromium)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run([*sudo, *cmd], capture_output=True, text=True, env=env, timeout=1200)
        if done.returncode:
            pytest.fail(f"`{' '.join([*sudo, *cmd])}` failed (install chromium by hand to run this test):\n"
                        f"{done.stderr[-2000:]}")
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def _browse(chromium: str, page: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on `page` with `flags`, console messages on stderr."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=3000", *flags, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _console(stderr: str) -> list[str]:
    """The page's console messages and uncaught errors in Chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_figure_rows_are_one_per_method_family(cg_savos: Path) -> None:
    cfg = benchmark_config(cg_savos, "unused", ablations=True, tta=True)
    rows = plan_rows(cfg)
    occluded = {"temporal-k3": 0.4, "temporal-k5": 0.7, "temporal-k5-bi": 0.97}
    entries = {r.name: {"metrics": {"frame_miou_occluded": occluded.get(r.name, 0.5)}} for r in rows}
    families = ["convex", "temporal-k5-bi", "deocclusion", "savos", "unet"]
    assert [r.name for r in figure_rows(rows, entries)] == families


def test_figure_videos_are_where_the_methods_differ_most() -> None:
    scores = {"a": {"occluded": [0.9, 0.2, 0.5, None, 0.3]}, "b": {"occluded": [0.9, 0.9, 0.6, None, 0.3]}}
    assert pick_figure_videos(scores, 3) == [(1, pytest.approx(0.7)), (2, pytest.approx(0.1)), (4, 0.0)]
    one = {"a": {"occluded": [0.8, None, 0.4, 0.6]}}
    assert [i for i, _ in pick_figure_videos(one, 4)] == [2, 3, 0, 1], "ties: hardest first, unscored last"


def test_benchmark_figure_shows_the_hardest_videos_with_scores(rules: Path) -> None:
    results = json.loads((rules / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    fig = results["figure"]
    assert fig["rows"] == ["convex", "temporal-k5-bi"]
    per = fig["per_video"]
    assert len(per["videos"]) == 6 and set(per["scores"]) == set(fig["rows"])
    occ = np.array([per["scores"][r]["occluded"] for r in fig["rows"]], float)
    spread = occ.max(axis=0) - occ.min(axis=0)
    assert [v["occluded_spread"] for v in fig["videos"]] == pytest.approx(sorted(spread)[::-1][:2])
    assert fig["video"] == fig["videos"][0]["video"] and fig["frames"] == 6
    for row in fig["rows"]:
        full = np.mean(per["scores"][row]["full"])
        assert abs(full - results["methods"][row]["metrics"]["frame_miou_full"]) < 0.02, row
    img = np.asarray(Image.open(rules / "figure.png").convert("RGB"))
    assert img.shape[1] == LABEL_WIDTH + 6 * 56 * 3 + 5 * 2
    assert img.shape[0] > 2 * 4 * 50 * 3, "two videos of four rows (visible, ground truth, two methods)"
    pixels = img.reshape(-1, 3).astype(int)
    for colour in (FALSE_POSITIVE, FALSE_NEGATIVE):
        assert (np.abs(pixels - colour).max(axis=1) <= 40).sum() > 200, colour


def test_report_page_renders_in_chromium(rules: Path, tmp_path: Path, chromium: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "report.html"
    code, out, err = run(capsys, "report", str(rules), "--out", str(page))
    assert code == 0, err
    assert "3 animations" in out and "per-video scores of convex, temporal-k3" in out
    text = page.read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert links and all(link.startswith(("data:", "#")) for link in links), "everything inlined"
    assert "<link" not in text and "url(" not in text and "@import" not in text
    assert text.count('src="data:image/gif;base64,') == 3 and 'src="data:image/png;base64,' in text
    assert "amodalkit benchmark --data" in text and "amodalkit evaluate --model temporal --k 5" in text
    assert text.count("<svg") == 2 and "re-scored here on 6 videos" in text

    shot = tmp_path / "shot.png"
    done = _browse(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,900")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console(done.stderr) == []
    dom = _browse(chromium, page, tmp_path, "--dump-dom")
    assert _console(dom.stderr) == []
    assert 'data-ready="1"' in dom.stdout, "the page's script ran to its end"
    assert dom.stdout.count("<tr>") >= 4 + 4 + 3
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    header = (np.abs(img - HEADER).max(axis=-1) <= 2)
    ys, xs = np.nonzero(header)
    assert ys.size > 2000, "the results table's header is on screen"
    table = img[ys.min(): ys.min() + 160, xs.min(): xs.max()]
    assert (table.max(axis=-1) < 100).sum() > 1500, "the table's text is drawn"


def test_a_console_error_would_be_caught(tmp_path: Path, chromium: str) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>noSuchFunction();</script></body></html>")
    assert any("noSuchFunction" in line for line in _console(_browse(chromium, page, tmp_path, "--dump-dom")
                                                              .stderr))


def test_report_of_an_evaluate_json(cg_savos: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    js = tmp_path / "m.json"
    code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", str(cg_savos / "test-00000.h5"),
                       "--json", str(js), "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "report", str(js), "--out", str(tmp_path / "m.html"), "--worst", "1")
    assert code == 0, err
    assert "1 animations" in out
    text = (tmp_path / "m.html").read_text()
    assert "amodalkit evaluate --model convex --protocol official --data" in text
    assert text.count("data:image/gif") == 1
    assert "Worst videos" in text and text.count("<svg") == 2


def test_report_of_results_whose_shards_are_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "docs.html"
    code, out, err = run(capsys, "report", str(DOCS_RESULTS), "--out", str(page))
    assert code == 0, err
    assert "12 methods" in out and "0 animations" in out
    text = page.read_text()
    assert "Supervised U-Net (oracle)" in text and "SaVos w/o optical flow" in text
    assert "no per-video scores for convex" in text and "its shards are not here" in text
    assert "--epochs savos=12" in text and "amodalkit train --model savos" in text


def test_report_refuses_bad_input(tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    code, _, err = run(capsys, "report", str(bad), "--out", str(tmp_path / "a.html"))
    assert_one_line_error(code, err, "x.json", "not a results file")
    bad.write_text("{")
    code, _, err = run(capsys, "report", str(bad), "--out", str(tmp_path / "a.html"))
    assert_one_line_error(code, err, "x.json", "unreadable")
    code, _, err = run(capsys, "report", str(rules), "--out", str(rules / "results.json"))
    assert_one_line_error(code, err, "--out would overwrite an input file")
    assert not (tmp_path / "a.html").exists()
