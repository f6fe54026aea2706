"""The layout rules: parts import only parts below them, no cycles, small modules, models apart from data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import amodalkit

ROOT = Path(amodalkit.__file__).parent
sys.path.insert(0, str(ROOT.parent / "tools"))
import import_graph  # noqa: E402

#: modules allowed past about 400 lines, and why
LONG_MODULES = {
    "amodalkit.preprocess.flow.flownet2": "FlowNet2's official module names and layer layout, kept together",
}
MAX_LINES = 420


def test_no_arrow_runs_back_up_and_nothing_imports_in_a_circle() -> None:
    r = import_graph.report(ROOT)
    assert r["unlisted_parts"] == [], "add new top-level parts to tools/import_graph.LAYERS"
    assert r["upward"] == {}
    assert r["part_cycles"] == [] and r["module_cycles"] == []


def test_modules_stay_small() -> None:
    _, sizes = import_graph.build_graph(ROOT)
    long = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert long == {}


def test_models_import_nothing_that_reads_data() -> None:
    code = ("import sys, amodalkit.models.registry as r; r.list_models(); "
            "print(sorted(m for m in sys.modules if m.startswith(('amodalkit.data', 'amodalkit.datasets', "
            "'amodalkit.preprocess', 'amodalkit.engine', 'amodalkit.evaluation'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
