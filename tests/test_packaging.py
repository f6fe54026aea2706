"""The wheel carries the zoo: build it, install it in a fresh venv outside the clone, run it elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: top-level folders the build must not see (a stale build/ would leak into the wheel) or that are heavy
NOT_COPIED_AT_TOP = {".git", ".venv", "build", "dist", "demo", ".pytest_cache", ".ruff_cache", ".hypothesis"}
NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.egg-info")
#: any download would go to this dead proxy and fail: the installed zoo must resolve offline
DEAD_PROXY = "http://127.0.0.1:9"
ZOO_NAME = "savos-chewing-gum"


def not_copied(folder: str, names: list[str]) -> set[str]:
    """``copytree``'s ignore: caches everywhere, the top-level folders above only at the top."""
    return NOT_COPIED(folder, names) | (NOT_COPIED_AT_TOP & set(names) if Path(folder) == ROOT else set())


def readme_python_api() -> str:
    """The first ```python block under README.md's "## Python API" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)
    assert len(section) == 2, "README.md has no '## Python API' section"
    block = re.search(r"^```python\n(.*?)^```", section[1], flags=re.S | re.M)
    assert block, "README.md's Python API section has no ```python block"
    return block.group(1)


def torch_pin() -> str:
    """The Makefile's TORCH_PIN, so the fresh venv gets the torch that `make` installs."""
    match = re.search(r"^TORCH_PIN\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert match, "Makefile sets no TORCH_PIN"
    return match.group(1)


def run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    """Run a command to completion; its stdout, or a failure showing the end of its output."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{tail}"
    return proc.stdout


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder outside the clone; the venv (about 1.5 GB with torch) is removed afterwards."""
    yield tmp_path
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)


def test_readme_python_api_block_is_found() -> None:
    code = readme_python_api()
    assert "amodalkit.zoo.load(" in code and "/tmp/cg-api" in code
    compile(code, "README.md", "exec")


@pytest.mark.packaging
def test_wheel_installed_outside_the_clone_has_the_zoo(work: Path) -> None:
    assert not work.is_relative_to(ROOT)
    base_env = {k: v for k, v in os.environ.items()
                if k not in {"PYTHONPATH", "VIRTUAL_ENV", "AMODALKIT_ZOO_REGISTRY", "AMODALKIT_CACHE"}}
    src, wheels, venv, elsewhere = work / "src", work / "wheels", work / "venv", work / "elsewhere"
    shutil.copytree(ROOT, src, ignore=not_copied)
    elsewhere.mkdir()

    run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-w", wheels, "-q"], work, base_env)
    (wheel,) = wheels.glob("amodalkit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for source in sorted(p for p in (ROOT / "zoo").iterdir() if p.is_file()):
            packed = hashlib.sha256(zf.read(f"amodalkit/_zoo/{source.name}")).hexdigest()
            assert packed == hashlib.sha256(source.read_bytes()).hexdigest(), source.name
        assert not [n for n in zf.namelist() if n.startswith(("zoo/", "tests/"))]
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())

    run([sys.executable, "-m", "venv", venv], work, base_env)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile"]  # bytecode: 4x the time
    run([*pip, torch_pin()], work, base_env)
    run([*pip, wheel], work, base_env)

    env = {k: v for k, v in base_env.items() if k.lower() not in {"no_proxy", "http_proxy", "https_proxy"}}
    env |= {"AMODALKIT_CACHE": str(work / "cache"), "OMP_NUM_THREADS": "1", "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY}
    python, amodalkit = venv / "bin" / "python", venv / "bin" / "amodalkit"
    code = "import amodalkit, amodalkit.zoo as z; print(amodalkit.__file__); print(z.zoo_dir())"
    where = run([python, "-c", code], elsewhere, env).splitlines()
    assert all(Path(p).is_relative_to(venv) for p in where) and where[1].endswith("amodalkit/_zoo"), where

    listing = run([amodalkit, "zoo", "list"], elsewhere, env)
    assert f"{ZOO_NAME}  [savos]" in listing and "shipped" in listing

    data = work / "cg"
    run([amodalkit, "gen-chewing-gum", data, "--preset", "savos2022", "--train", "0", "--val", "0",
         "--test", "4", "--seed", "0", "--quiet"], elsewhere, env)
    run([amodalkit, "evaluate", "--model", f"zoo:{ZOO_NAME}", "--data", f"{data}/test-*.h5", "--quiet",
         "--json", work / "savos.json"], elsewhere, env)
    result = json.loads((work / "savos.json").read_text())
    assert result["method"] == "savos" and result["n_videos"] == 4
    run([amodalkit, "show", data / "test-00000.h5", "--video", "0", "--model", f"zoo:{ZOO_NAME}", "--out",
         work / "v.png"], elsewhere, env)
    assert (work / "v.png").stat().st_size > 0

    example = work / "readme_python_api.py"
    example.write_text(readme_python_api().replace("/tmp/cg-api", str(work / "readme-cg")))
    assert run([python, example], elsewhere, env).strip()
    assert not any((work / "cache").rglob("*")), "the installed zoo downloaded something"
