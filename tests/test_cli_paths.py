"""Issue 12, classes 1, 2 and 5 on the command line: paths escaping their root, outputs over inputs,
outputs checked before the work, leftovers of killed runs and concurrent writers."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run
from local_server import serve

from amodalkit.io.atomic import LOCK_NAME, pid_alive

PAYLOAD = b"weights" * 1000
GEN = ["gen-chewing-gum", "--preset", "savos2022", "--train", "1", "--val", "0", "--test", "0", "--quiet"]


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


@pytest.fixture()
def shard(cg_savos: Path, tmp_path: Path) -> Path:
    """A private copy of a valid shard in its own folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    return Path(shutil.copy(cg_savos / "test-00000.h5", folder / "test-00000.h5"))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at every path and records the requests."""

    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        Handler.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    Handler.hits.clear()
    with serve(Handler) as url:
        yield url


# -- class 1: paths from files stay inside their root -------------------------------------------------


@pytest.mark.parametrize(("file", "sha"), [
    ("../../../../outside/x.safetensors", None),
    ("/tmp/amodalkit-escape-test.safetensors", None),
    ("sub/../../x.safetensors", None),
    ("x.safetensors", "../../../../" + "0" * 52),
])
def test_registry_cannot_write_outside_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], server: str,
                                                 file: str, sha: str | None) -> None:
    work = tmp_path / "work"
    reg = work / "zoo" / "registry.json"
    reg.parent.mkdir(parents=True)
    entry = {"name": "evil", "model": "savos", "file": file, "size": len(PAYLOAD),
             "sha256": sha or hashlib.sha256(PAYLOAD).hexdigest(), "url": f"{server}/x.bin"}
    reg.write_text(json.dumps({"models": [entry]}))
    monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", str(reg))
    monkeypatch.setenv("AMODALKIT_CACHE", str(work / "cache" / "deep" / "er"))
    before = tree(tmp_path)
    code, _, err = run(capsys, "zoo", "download", "evil")
    assert_one_line_error(code, err, str(reg), "evil")
    assert Handler.hits == []
    assert tree(tmp_path) == before
    assert not Path("/tmp/amodalkit-escape-test.safetensors").exists()


def test_zoo_download_removes_a_killed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], server: str) -> None:
    reg = tmp_path / "zoo" / "registry.json"
    reg.parent.mkdir()
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    reg.write_text(json.dumps({"models": [{"name": "ok", "model": "savos", "file": "ok.safetensors",
                                           "size": len(PAYLOAD), "sha256": digest, "url": f"{server}/ok"}]}))
    monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", str(reg))
    monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "zoo"
    cache.mkdir(parents=True)
    killed = cache / f".{digest[:12]}-ok.tmp-{dead_pid()}.safetensors"
    killed.write_bytes(PAYLOAD[:10])
    code, out, err = run(capsys, "zoo", "download", "ok")
    assert code == 0, err
    assert Path(out.strip()).read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == [f"{digest[:12]}-ok.safetensors"]


# -- class 2: outputs never overwrite inputs ----------------------------------------------------------


@pytest.fixture()
def frames(tmp_path: Path) -> Path:
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        assert cv2.imwrite(str(folder / f"{t:06d}.png"), np.full((8, 8, 3), 40 * t, np.uint8))
    return folder


def test_tracks_out_over_a_frame_or_the_mots_file(frames: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    mots = tmp_path / "0000.txt"
    mots.write_text("0 1 1 8 8 abc\n")
    before = tree(tmp_path)
    for out in (frames / "000001.png", mots):
        for given in (str(frames / "*.png"), str(frames)):
            code, _, err = run(capsys, "tracks", "--mots", str(mots), "--frames", given, "--out", str(out),
                               "--quiet")
            assert_one_line_error(code, err, str(out), "--out would overwrite an input file")
    masks = tmp_path / "masks"
    shutil.copytree(frames, masks)
    code, _, err = run(capsys, "tracks", "--masks", str(masks), "--frames", str(frames), "--out",
                       str(masks / "000000.png"), "--quiet")
    assert_one_line_error(code, err, "would overwrite an input file")
    assert tree(tmp_path) == {**before, **{f"masks/{k}": v for k, v in tree(frames).items()}}


def test_evaluate_json_over_an_input_shard(shard: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(shard)
    before = tree(tmp_path)
    for data, out in ((str(shard), shard), (str(shard.parent / "*.h5"), shard), (str(shard.parent), shard),
                      (str(shard), link)):
        code, out_text, err = run(capsys, "evaluate", "--model", "convex", "--data", data, "--json",
                                  str(out), "--quiet")
        assert_one_line_error(code, err, "--json would overwrite an input file")
        assert out_text == ""
    assert tree(tmp_path) == before


def test_evaluate_checks_the_json_location_before_scoring(shard: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import amodalkit.evaluation.evaluate

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("scored before checking --json")

    monkeypatch.setattr(amodalkit.evaluation.evaluate, "evaluate_method", never)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile / "m.json", tmp_path):
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", str(shard), "--json",
                           str(target), "--quiet")
        assert_one_line_error(code, err, str(target))
        assert "--json" in err


def test_export_coco_outputs_over_inputs_or_each_other(shard: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(tmp_path)
    same = str(tmp_path / "gt.json")
    cases = [(["--out", str(shard)], "--out would overwrite an input file"),
             (["--out", same, "--model", "convex", "--pred-out", str(shard)], "--pred-out would overwrite"),
             (["--out", same, "--model", "convex", "--pred-out", same], "are the same file")]
    for extra, needle in cases:
        code, _, err = run(capsys, "export-coco", str(shard), *extra, "--quiet")
        assert_one_line_error(code, err, needle)
    assert tree(tmp_path) == before


def test_show_out_over_its_shard(shard: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = shard.with_suffix(".png")
    shard.rename(picture)
    before = picture.read_bytes()
    code, _, err = run(capsys, "show", str(picture), "--out", str(picture))
    assert_one_line_error(code, err, "--out would overwrite an input file")
    assert picture.read_bytes() == before


def test_run_folders_must_not_hold_their_data(shard: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = shard.parent
    before = tree(tmp_path)
    for args in (["train", "--data", str(data), "--out", str(data), "--quiet"],
                 ["train", "--data", str(shard), "--out", str(tmp_path), "--quiet"],
                 ["benchmark", "--data", str(data), "--out", str(data), "--quiet"]):
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, "--out holds an input file")
    assert tree(tmp_path) == before


def test_build_kins_video_outputs_over_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kins = out / "summary.json"
    kins.write_text("{}")
    code, _, err = run(capsys, "build-kins-video", "--kitti-raw", str(tmp_path), "--kitti-devkit",
                       str(tmp_path), "--kitti-object", str(tmp_path), "--kins-json", str(kins), "--tracks",
                       f"pointtrack:{tmp_path}", "--out", str(out), "--quiet")
    assert_one_line_error(code, err, "--out would overwrite an input file")
    assert kins.read_text() == "{}"


# -- class 5: leftovers and concurrent runs -----------------------------------------------------------


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cg"
    code, _, err = run(capsys, *GEN[:1], str(out), *GEN[1:])
    assert code == 0, err
    dead, live = dead_pid(), os.getppid()
    stale = out / f".train-00001.tmp-{dead}.h5"
    stale.write_bytes(b"half a shard")
    running = out / f".train-00002.tmp-{live}.h5"
    running.write_bytes(b"a live run's shard")
    (out / LOCK_NAME).write_text(f"{dead}\n")
    for args in (["info", str(out)], ["info", str(out / "*.h5")],
                 ["evaluate", "--model", "convex", "--data", str(out), "--quiet"]):
        code, text, err = run(capsys, *args)
        assert code == 0, err
        assert "tmp-" not in text
    code, _, err = run(capsys, *GEN[:1], str(out), *GEN[1:])
    assert code == 0, err
    assert not stale.exists()
    assert running.exists()
    assert not (out / LOCK_NAME).exists()


def test_two_generators_into_one_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cg"
    first = subprocess.Popen([sys.executable, "-m", "amodalkit", "gen-chewing-gum", str(out), "--preset",
                              "savos2022", "--train", "20000", "--val", "0", "--test", "0",
                              "--videos-per-shard", "2", "--quiet"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_NAME).is_file() or not list(out.glob("train-*.h5")):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, _, err = run(capsys, *GEN[:1], str(out), *GEN[1:])
        assert_one_line_error(code, err, str(out), f"another amodalkit run (pid {first.pid})")
        code, _, err = run(capsys, "info", str(out))
        assert code == 0, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not pid_alive(first.pid)
    assert (out / LOCK_NAME).is_file()
    code, _, err = run(capsys, *GEN[:1], str(out), *GEN[1:])
    assert_one_line_error(code, err, "other settings")
    assert not list(out.glob(f".*tmp-{first.pid}*"))
    code, _, err = run(capsys, "info", str(out))
    assert code == 0, err
