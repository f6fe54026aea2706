from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from local_server import serve

from amodalkit import zoo
from amodalkit.errors import AmodalkitError

PAYLOAD = bytes(range(256)) * 400
REPO_ZOO = Path(__file__).resolve().parents[1] / "zoo"
RELEASE_URL = re.compile(r"https://github\.com/amodalkit/amodalkit/releases/download/v\d+\.\d+\.\d+/(?P<file>[^/]+)")


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves /good.bin, /corrupt.bin (wrong bytes) and /dies.bin (closes mid-transfer)."""

    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        Handler.hits.append(self.path)
        body = PAYLOAD
        if self.path == "/corrupt.bin":
            body = PAYLOAD[:-1] + b"x"
        self.send_response(200 if self.path != "/missing.bin" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/missing.bin":
            return
        if self.path == "/dies.bin":
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    Handler.hits.clear()
    with serve(Handler) as url:
        yield url


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> Path:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    entries = [
        {"name": name, "model": "savos", "file": f"{name}.safetensors", "sha256": digest,
         "size": len(PAYLOAD), "url": f"{server}/{path}", "metrics": {"frame_miou_full": 0.9}}
        for name, path in [("good", "good.bin"), ("corrupt", "corrupt.bin"), ("dies", "dies.bin"),
                           ("missing", "missing.bin")]
    ]
    reg = tmp_path / "zoo" / "registry.json"
    reg.parent.mkdir()
    reg.write_text(json.dumps({"models": entries}))
    monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", str(reg))
    monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "cache"))
    return reg


def test_download_verifies_and_caches(registry: Path) -> None:
    path = zoo.fetch_weights("good", quiet=True)
    assert path.read_bytes() == PAYLOAD
    assert Handler.hits == ["/good.bin"]
    assert zoo.fetch_weights("good", quiet=True) == path
    assert Handler.hits == ["/good.bin"]  # a verified cached file is never fetched again
    path.write_bytes(b"tampered")
    assert zoo.fetch_weights("good", quiet=True).read_bytes() == PAYLOAD
    assert Handler.hits == ["/good.bin", "/good.bin"]


def test_hash_mismatch_deletes_and_names_both_hashes(registry: Path) -> None:
    with pytest.raises(AmodalkitError) as err:
        zoo.fetch_weights("corrupt", quiet=True)
    msg = str(err.value)
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert hashlib.sha256(PAYLOAD[:-1] + b"x").hexdigest() in msg
    assert not any((registry.parent.parent / "cache").rglob("*.safetensors"))
    assert not any((registry.parent.parent / "cache").rglob(".*"))


def test_server_dying_mid_transfer_leaves_nothing(registry: Path) -> None:
    with pytest.raises(AmodalkitError, match="run the command again"):
        zoo.fetch_weights("dies", quiet=True)
    assert not [p for p in (registry.parent.parent / "cache").rglob("*") if p.is_file()]


def test_http_error_is_clear(registry: Path) -> None:
    with pytest.raises(AmodalkitError, match="failed"):
        zoo.fetch_weights("missing", quiet=True)


def test_shipped_file_needs_no_network(registry: Path) -> None:
    shipped = registry.parent / "good.safetensors"
    shipped.write_bytes(PAYLOAD)
    assert zoo.fetch_weights("good", quiet=True) == shipped
    assert Handler.hits == []
    shipped.write_bytes(b"other")
    with pytest.raises(AmodalkitError, match="do not match the registry"):
        zoo.fetch_weights("good", quiet=True)


class ReleaseHandler(http.server.BaseHTTPRequestHandler):
    """Serves the repository's zoo/ files by name, as the release assets would."""

    hits: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        ReleaseHandler.hits.append(self.path)
        source = REPO_ZOO / self.path.lstrip("/")
        body = source.read_bytes() if source.parent == REPO_ZOO and source.is_file() else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def release_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the repository's registry (no weights beside it) whose urls point at a local server."""
    ReleaseHandler.hits.clear()
    data = json.loads((REPO_ZOO / "registry.json").read_text())
    with serve(ReleaseHandler) as url:
        for entry in data["models"]:
            entry["url"] = f"{url}/{entry['file']}"
        reg = tmp_path / "zoo" / "registry.json"
        reg.parent.mkdir()
        reg.write_text(json.dumps(data))
        monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", str(reg))
        monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "cache"))
        yield reg


def test_every_repository_entry_has_a_release_url() -> None:
    for name, entry in zoo.load_registry(REPO_ZOO / "registry.json").items():
        match = RELEASE_URL.fullmatch(entry.url)
        assert match and match["file"] == entry.file, (name, entry.url)


def test_repository_entries_use_the_shipped_file_before_their_url(release_registry: Path) -> None:
    for name, entry in zoo.load_registry().items():
        shutil.copyfile(REPO_ZOO / entry.file, release_registry.parent / entry.file)
        assert zoo.fetch_weights(name, quiet=True) == release_registry.parent / entry.file
    assert ReleaseHandler.hits == []


def test_repository_entries_download_and_verify_when_not_shipped(release_registry: Path) -> None:
    entries = zoo.load_registry()
    for name, entry in entries.items():
        path = zoo.fetch_weights(name, quiet=True)
        assert path.parent == release_registry.parent.parent / "cache" / "zoo"
        assert zoo.sha256_of(path) == entry.sha256 and path.stat().st_size == entry.size
        assert zoo.fetch_weights(name, quiet=True) == path
    assert ReleaseHandler.hits == [f"/{e.file}" for e in entries.values()]
    assert zoo.load("savos-chewing-gum").name == "savos"


def test_package_data_comes_before_the_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel's amodalkit/_zoo/ wins; a clone reads zoo/; with neither the error names the package's copy."""
    monkeypatch.delenv("AMODALKIT_ZOO_REGISTRY", raising=False)
    assert zoo.zoo_dir() == REPO_ZOO and zoo.registry_path() == REPO_ZOO / "registry.json"
    package = tmp_path / "site-packages" / "amodalkit"
    monkeypatch.setattr(zoo, "resources", SimpleNamespace(files=lambda _: package))
    assert zoo.zoo_dir() == REPO_ZOO
    (package / "_zoo").mkdir(parents=True)
    shutil.copyfile(REPO_ZOO / "registry.json", package / "_zoo" / "registry.json")
    assert zoo.registry_path() == package / "_zoo" / "registry.json"
    monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", "")
    assert zoo.registry_path() == package / "_zoo" / "registry.json"
    (package / "_zoo" / "registry.json").unlink()
    monkeypatch.setattr(zoo, "REPO_ZOO", tmp_path / "site-packages" / "zoo")
    with pytest.raises(AmodalkitError, match="zoo registry not found") as err:
        zoo.load_registry()
    assert str(package / "_zoo" / "registry.json") in str(err.value)


def test_unknown_name_and_malformed_registry(registry: Path) -> None:
    with pytest.raises(AmodalkitError, match="no zoo model 'nope'"):
        zoo.get_entry("nope")
    registry.write_text("{not json")
    with pytest.raises(AmodalkitError, match="malformed zoo registry"):
        zoo.load_registry()


def test_format_registry_lists_metrics(registry: Path) -> None:
    text = zoo.format_registry(zoo.load_registry())
    assert "good  [savos]" in text and "frame_miou_full 0.9000" in text


def test_cli_list_and_download(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amodalkit.cli.app import main

    assert main(["zoo", "list"]) == 0
    assert "good  [savos]" in capsys.readouterr().out
    assert main(["zoo", "download", "good", "--quiet"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == PAYLOAD
    assert main(["zoo", "download", "corrupt", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 mismatch" in err


def test_load_and_evaluate_a_shipped_savos_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 cg_savos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from amodalkit.cli.app import main
    from amodalkit.models.savos.config import SavosConfig
    from amodalkit.models.savos.net import SavosNet, save_savos

    torch.manual_seed(0)
    weights = save_savos(tmp_path / "tiny.safetensors", SavosNet(SavosConfig.small(hidden=16)), half=True)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"models": [{"name": "tiny", "model": "savos", "file": "tiny.safetensors",
                                           "sha256": digest, "size": weights.stat().st_size}]}))
    monkeypatch.setenv("AMODALKIT_ZOO_REGISTRY", str(reg))
    method = zoo.load("tiny")
    assert method.name == "savos"
    code = main(["evaluate", "--model", "zoo:tiny", "--data", str(cg_savos / "test-00000.h5"), "--quiet",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "savos"
    assert main(["evaluate", "--model", "zoo:tiny", "--checkpoint", str(weights), "--data",
                 str(cg_savos)]) == 2


def test_repository_registry_models_load_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AMODALKIT_ZOO_REGISTRY", raising=False)
    monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "empty-cache"))
    for name, entry in zoo.load_registry().items():
        assert set(entry.metrics) >= {"frame_miou_full", "frame_miou_occluded"}
        assert zoo.load(name).name == entry.model


def test_zoo_is_an_attribute_of_the_package(tmp_path: Path) -> None:
    """The README's one-liner: ``import amodalkit; amodalkit.zoo.load(NAME)``, in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "AMODALKIT_ZOO_REGISTRY"}
    env |= {"AMODALKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    code = "import amodalkit; m = amodalkit.zoo.load('savos-chewing-gum'); print(m.name)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "savos"


def test_shipped_savos_model_reproduces_its_registered_numbers(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The first 100 savos2022 test videos (seed 0) score what the registry says, within 0.005."""
    import torch

    from amodalkit.datasets.chewing_gum import generate_dataset, make_config
    from amodalkit.evaluation.evaluate import evaluate_method
    from amodalkit.io.shards import expand_shard_paths

    monkeypatch.delenv("AMODALKIT_ZOO_REGISTRY", raising=False)
    monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    metrics = zoo.get_entry("savos-chewing-gum").metrics
    generate_dataset(tmp_path / "cg", make_config("savos2022"), {"test": 100}, seed=0, quiet=True)
    paths = expand_shard_paths(str(tmp_path / "cg"))
    result = evaluate_method(zoo.load("savos-chewing-gum"), paths, quiet=True, protocol=metrics["protocol"])
    assert result["n_videos"] == 100
    for key in ("frame_miou_full", "frame_miou_occluded"):
        assert abs(result[key] - metrics[f"first_100_{key}"]) < 0.005, (key, result[key])


def test_shipped_estimated_flow_model_reproduces_its_registered_numbers(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """The estimated-flow model on the first 100 seed-23 test videos filled with its own flow backend."""
    import torch

    from amodalkit.datasets.chewing_gum import generate_dataset, make_config
    from amodalkit.evaluation.evaluate import evaluate_method
    from amodalkit.io.shards import expand_shard_paths
    from amodalkit.preprocess.flow.backends import get_flow_backend
    from amodalkit.preprocess.flow.stage import fill_shards_flow

    monkeypatch.delenv("AMODALKIT_ZOO_REGISTRY", raising=False)
    monkeypatch.setenv("AMODALKIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    entry = zoo.get_entry("savos-chewing-gum-rigid")
    assert entry.flow == "rigid:layers"
    generate_dataset(tmp_path / "cg", make_config("savos2022"), {"test": 100}, seed=23, quiet=True)
    paths = expand_shard_paths(str(tmp_path / "cg"))
    fill_shards_flow(paths, get_flow_backend(entry.flow), quiet=True)
    result = evaluate_method(zoo.load(entry.name), paths, quiet=True, protocol=entry.metrics["protocol"])
    assert result["n_videos"] == 100 and result["flow"] == entry.flow
    for key in ("frame_miou_full", "frame_miou_occluded"):
        assert abs(result[key] - entry.metrics[f"first_100_{key}"]) < 0.005, (key, result[key])


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("size", "big", "field 'size' must be an integer"), ("size", -5, "negative size"),
     ("file", 3, "field 'file' must be a string"), ("metrics", [1], "field 'metrics' must be a JSON object"),
     ("metrics", {"miou": {"a": 1}}, "metric 'miou' must be a number")],
)
def test_registry_fields_of_the_wrong_type_are_one_line_errors(registry: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               field: str, value: object,
                                                               needle: str) -> None:
    from cli_helpers import assert_one_line_error, run

    data = json.loads(registry.read_text())
    data["models"][0][field] = value
    registry.write_text(json.dumps(data))
    before = registry.read_bytes()
    for args in (["zoo", "list"], ["zoo", "download", "good", "--quiet"]):
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, str(registry), "malformed zoo registry", needle)
    assert registry.read_bytes() == before


def test_zoo_list_shows_the_spread_over_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    from amodalkit.cli import main

    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "over seeds 0, 1, 2 (mean ± sd, n=3): frame_miou_full" in out and "shipped: seed 0" in out
