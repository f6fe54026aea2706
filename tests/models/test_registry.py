"""The one model registry: every model's facts in its spec, and a new model is one registration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run

from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import Video
from amodalkit.models import registry
from amodalkit.models.base import AmodalMethod, StepContext
from amodalkit.models.registry import ModelSpec, get_model_spec, list_models, register_model


def test_every_model_is_listed_in_table_order_with_its_facts() -> None:
    assert list_models() == ["convex", "temporal", "deocclusion", "savos", "unet"]
    assert list_models(trained=True) == ["deocclusion", "savos", "unet"]
    assert [get_model_spec(n).reads_amodal for n in list_models(trained=True)] == [False, False, True]
    for name in list_models(trained=True):
        spec = get_model_spec(name)
        config = spec.build_config()
        assert type(config) is spec.config
        net = spec.net(config)
        assert isinstance(net, torch.nn.Module) and spec.data in registry.DATA_KINDS
    with pytest.raises(AmodalkitError, match="unknown model 'nope'; choose from convex, temporal"):
        get_model_spec("nope")


def test_a_spec_of_a_trained_model_must_be_complete() -> None:
    with pytest.raises(ValueError, match="needs"):
        ModelSpec(name="half", summary="", method=AmodalMethod, config=dict)


class AllVisible(AmodalMethod):
    """A toy rule: the amodal mask is the visible mask."""

    name = "all-visible"

    def predict_video(self, video: Video) -> np.ndarray:
        return video.visible_masks()


def test_a_new_model_is_one_registration(cg_savos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model(ModelSpec(name=AllVisible.name, summary="visible mask as amodal", method=AllVisible))
    assert "all-visible" in list_models(trained=False)
    out = tmp_path / "r.json"
    data = str(cg_savos / "test-*.h5")
    code, _, err = run(capsys, "evaluate", "--model", "all-visible", "--data", data, "--json", str(out))
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["method"] == "all-visible" and result["frame_miou_occluded"] < 1e-6
    code, stdout, err = run(capsys, "models")
    assert code == 0 and "all-visible" in stdout and "visible mask as amodal" in stdout
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ModelSpec(name="all-visible", summary="again", method=AllVisible))


def test_model_and_its_old_spelling(cg_savos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(cg_savos / "test-00000.h5")
    code, _, err = run(capsys, "evaluate", "--method", "convex", "--data", data)
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", "--method", "convex", "--model", "convex", "--data", data)
    assert_one_line_error(code, err, "--method is the old spelling of --model")
    code, _, err = run(capsys, "evaluate", "--model", "convex", "--checkpoint", "x.ckpt", "--data", data)
    assert_one_line_error(code, err, "rule-based: it takes no --checkpoint")
    code, _, err = run(capsys, "train", "--model", "convex", "--data", data, "--out", "unused")
    assert_one_line_error(code, err, "convex is rule-based and has nothing to train")


def test_step_context_generator_is_keyed_by_phase_and_index() -> None:
    def ctx(phase: str, index: int) -> StepContext:
        return StepContext(phase, index, 0, lambda: None)

    keys = (("train", 0), ("train", 0), ("val", 0))
    draw = [torch.rand(3, generator=ctx(p, i).generator()) for p, i in keys]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
