"""Session fixtures: the real-format KITTI/KINS world and FISHBOWL release of dataset_fixtures."""

from __future__ import annotations

import pytest
from dataset_fixtures import FishbowlRelease, KittiWorld, write_fishbowl, write_kitti_world


@pytest.fixture(scope="session")
def kitti_world(tmp_path_factory: pytest.TempPathFactory) -> KittiWorld:
    """The miniature KITTI raw + object + devkit + KINS + tracks world."""
    return write_kitti_world(tmp_path_factory.mktemp("kitti_world"))


@pytest.fixture(scope="session")
def fishbowl_release(tmp_path_factory: pytest.TempPathFactory) -> FishbowlRelease:
    """A two-sample FISHBOWL release in both layouts (the SaVos copy lacks fish 9's render)."""
    return write_fishbowl(tmp_path_factory.mktemp("fishbowl"))
