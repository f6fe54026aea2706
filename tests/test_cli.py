from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run


def test_gen_evaluate_json_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cg"
    code, stdout, _ = run(capsys, "gen-chewing-gum", str(out), "--preset", "savos2022", "--train", "2",
                          "--val", "1", "--test", "3", "--seed", "0", "--quiet")
    assert code == 0, stdout
    assert sorted(p.name for p in out.glob("*.h5")) == ["test-00000.h5", "train-00000.h5", "val-00000.h5"]
    assert (out / "chewing_gum.json").exists()
    js = tmp_path / "m.json"
    code, stdout, _ = run(capsys, "evaluate", "--model", "convex", "--data", str(out / "test-*.h5"),
                          "--json", str(js), "--quiet")
    assert code == 0
    assert "frame-level mIoU" in stdout
    result = json.loads(js.read_text())
    assert result["method"] == "convex"
    assert result["n_videos"] == 3
    code, stdout, _ = run(capsys, "info", str(out / "test-00000.h5"))
    assert code == 0
    assert "never-visible amodal  0.0000" in stdout
    assert "schema version        1" in stdout


def test_info_json(cg_savos, capsys) -> None:
    code, stdout, _ = run(capsys, "info", "--json", str(cg_savos / "test-00000.h5"))
    assert code == 0
    (s,) = json.loads(stdout)
    assert s["videos"] == 3 and s["objects"] == 6 and s["never_visible_fraction"] == 0.0
    assert 0 < s["mean_occlusion_rate"] < 1
    assert s["flow_backends"] == ["exact"]


def test_show_png_and_gif(cg_savos, tmp_path: Path, capsys) -> None:
    from PIL import Image

    for name in ("a.png", "a.gif"):
        code, _, err = run(capsys, "show", str(cg_savos / "test-00000.h5"), "--video", "1", "--method",
                           "convex", "--out", str(tmp_path / name))
        assert code == 0, err
        img = Image.open(tmp_path / name)
        assert img.size[0] > 56
    assert Image.open(tmp_path / "a.gif").n_frames == 40


def test_show_a_trained_model_beside_a_method(cg_savos, tmp_path: Path, capsys) -> None:
    from PIL import Image

    shard = str(cg_savos / "test-00000.h5")
    code, _, err = run(capsys, "show", shard, "--model", "convex", "--out", str(tmp_path / "one.png"))
    assert code == 0, err
    code, _, err = run(capsys, "show", shard, "--model", "convex", "--model", "zoo:savos-chewing-gum",
                       "--out", str(tmp_path / "two.png"))
    assert code == 0, err
    one, two = Image.open(tmp_path / "one.png"), Image.open(tmp_path / "two.png")
    assert one.size[0] == two.size[0] and two.size[1] > one.size[1]
    code, _, err = run(capsys, "show", shard, "--checkpoint", "x.safetensors",
                       "--out", str(tmp_path / "a.png"))
    assert_one_line_error(code, err, "--checkpoint goes with exactly one trained --model")


def test_missing_path_errors(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "info", str(tmp_path / "nope.h5"))
    assert_one_line_error(code, err, "nope.h5", "no such file")
    code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", str(tmp_path / "x-*.h5"))
    assert_one_line_error(code, err, "x-*.h5", "no shard matches")
    code, _, err = run(capsys, "show", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "a.png"))
    assert_one_line_error(code, err, "nope.h5", "does not exist")


def test_invalid_and_truncated_shards(cg_savos, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.h5"
    data = (cg_savos / "test-00000.h5").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    code, _, err = run(capsys, "info", str(bad))
    assert_one_line_error(code, err, "bad.h5", "truncated or corrupt")
    code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", str(bad))
    assert_one_line_error(code, err, "bad.h5")


def test_invalid_option_values(tmp_path: Path, capsys, cg_savos) -> None:
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "o"), "--preset", "nope")
    assert_one_line_error(code, err, "unknown preset")
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "o"), "--jobs", "0")
    assert_one_line_error(code, err, "--jobs")
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "o"), "--frames", "abc")
    assert_one_line_error(code, err, "--frames")
    code, _, err = run(capsys, "evaluate", "--model", "nope", "--data", str(cg_savos))
    assert_one_line_error(code, err, "unknown model 'nope'")
    code, _, err = run(capsys, "show", str(cg_savos / "test-00000.h5"), "--video", "99",
                       "--out", str(tmp_path / "a.png"))
    assert_one_line_error(code, err, "out of range")
    code, _, err = run(capsys, "show", str(cg_savos / "test-00000.h5"), "--out", str(tmp_path / "a.jpg"))
    assert_one_line_error(code, err, "a.jpg", ".png or .gif")


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs a non-root user")
def test_unwritable_output(tmp_path: Path, capsys, cg_savos) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    args = ["gen-chewing-gum", str(locked / "cg"), "--train", "1", "--val", "0", "--test", "0", "--quiet"]
    if os.geteuid() == 0:  # root ignores permissions: drop to nobody for this one command
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "amodalkit", *args], capture_output=True, text=True,
                              env={**os.environ, "HOME": str(tmp_path)})
        tmp_path.chmod(0o755)
        code, err = proc.returncode, proc.stderr
    else:
        code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, "locked")


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "amodalkit", "info", str(tmp_path / "none.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr


def test_evaluate_temporal_options(cg_savos, tmp_path: Path, capsys) -> None:
    js = tmp_path / "t.json"
    code, _, err = run(capsys, "evaluate", "--model", "temporal", "--k", "5", "--bidirectional", "--data",
                       str(cg_savos / "test-00000.h5"), "--json", str(js), "--quiet")
    assert code == 0, err
    result = json.loads(js.read_text())
    assert result["k"] == 5 and result["bidirectional"] is True
    code, _, err = run(capsys, "evaluate", "--model", "convex", "--k", "3", "--data", str(cg_savos))
    assert_one_line_error(code, err, "--k: not an option of --model convex")
