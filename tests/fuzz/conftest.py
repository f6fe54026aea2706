"""The fuzz suite reuses the real-format writers of tests/datasets/dataset_fixtures.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
