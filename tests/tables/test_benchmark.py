from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run
from PIL import Image

import amodalkit.tables.benchmark as benchmark
from amodalkit.cli.app import main
from amodalkit.engine import TimeBudget, Trainer
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import read_checkpoint
from amodalkit.models.registry import list_models
from amodalkit.models.savos.config import ABLATIONS
from amodalkit.tables.benchmark import run_benchmark
from amodalkit.tables.config import BenchmarkConfig, TrainBudget, benchmark_config, parse_epochs
from amodalkit.tables.plan import plan_rows
from amodalkit.tables.train import train_row_run, train_rows_in_parallel
from amodalkit.viz import LABEL_WIDTH

TINY_SAVOS = {"preset": "small", "crop": "16x16", "channels": "8,8,8,16", "hidden": 16, "clip_len": 0,
              "crop_mode": "track"}
ALL_ROWS = {"convex", "temporal-k3", "temporal-k5", "temporal-k5-bi", "deocclusion", "savos", "unet"}


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _tiny(data: Path, out: Path, methods: str = "savos", epochs: int = 1,
          **settings: object) -> BenchmarkConfig:
    cfg = benchmark_config(data, out, methods, device="cpu", quiet=True, **settings)
    cfg.train["savos"] = TrainBudget(epochs=epochs, batch_size=8, lr=1e-3, options=dict(TINY_SAVOS))
    return cfg


def _bench_args(data: Path, out: Path) -> list[str]:
    return ["benchmark", "--data", str(data), "--out", str(out), "--epochs", "1", "--device", "cpu",
            "--quiet"]


@pytest.fixture(scope="module")
def bench(cg_savos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every method on the tiny savos2022 set, one epoch each, through the CLI."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench") / "results"
    assert main(_bench_args(cg_savos, out)) == 0
    return out


def test_results_json_has_every_method(bench: Path) -> None:
    results = _strict_json(bench / "results.json")
    assert set(results["methods"]) == ALL_ROWS
    assert results["config"] == _strict_json(bench / "config.json")
    for name, entry in results["methods"].items():
        assert entry == _strict_json(bench / "methods" / f"{name}.json")
        for value in entry["metrics"].values():
            assert 0 <= value <= 1, (name, entry["metrics"])
        assert entry["evaluation"]["n_videos"] == 6
        assert entry["eval_seconds"] > 0 and entry["object_frames_per_s"] > 0
        assert entry["seed"] == 0 and entry["command"].startswith("amodalkit benchmark --data")
        assert entry["commands"]["evaluate"].startswith("amodalkit evaluate")
        if entry["training"] is None:
            assert name in {"convex", "temporal-k3", "temporal-k5", "temporal-k5-bi"}
        else:
            assert entry["training"]["epochs_run"] == 1 and entry["train_seconds"] > 0
            assert Path(entry["training"]["checkpoint"]) == bench / "runs" / name / "best.safetensors"
            assert entry["commands"]["train"].startswith(f"amodalkit train --model {name}")
    temporal = results["methods"]["temporal-k5-bi"]["evaluation"]
    assert (temporal["k"], temporal["bidirectional"]) == (5, True)
    savos_train = results["methods"]["savos"]["commands"]["train"]
    assert "--preset cpu" in savos_train and "--ema 0.99" in savos_train
    assert "raw_model" in torch.load(bench / "runs" / "savos" / "last.state.pt", weights_only=True)
    paper = results["methods"]["savos"]["paper"]
    assert paper == {"full": 0.9746, "occluded": 0.8046, "dataset": "Chewing Gum"}
    assert results["methods"]["temporal-k3"]["paper"] is None


def test_results_md_is_table_one(bench: Path) -> None:
    md = (bench / "results.md").read_text()
    header = [line for line in md.splitlines() if line.startswith("| method | frame Full")]
    assert len(header) == 1 and "paper (Chewing Gum) Occluded" in header[0]
    for label, paper in [("Convex hull", "| .9264 | .3182 |"),
                         ("Self-Deocclusion (PCNet-M)", "| .9624 | .3307 |"),
                         ("SaVos", "| .9746 | .8046 |"), ("Supervised U-Net (oracle)", "| .9613 | .3321 |"),
                         ("Temporal aggregation k=5, bi-directional", "| — | — |")]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        assert row.endswith(paper), row
    assert "![methods side by side](figure.png)" in md


def test_figure_shows_each_method_family(bench: Path) -> None:
    results = _strict_json(bench / "results.json")
    fig = results["figure"]
    assert fig["rows"] == ["convex", "temporal-k5-bi", "deocclusion", "savos", "unet"]
    assert len(fig["videos"]) == 2 and fig["frames"] == 6 and fig["video"]
    assert set(fig["per_video"]["scores"]) == set(fig["rows"]) and len(fig["per_video"]["videos"]) == 6
    with Image.open(bench / "figure.png") as img:
        width, height = img.size
    assert width == LABEL_WIDTH + 6 * 56 * 3 + 5 * 2
    assert height > 2 * 7 * 50 * 3


def test_rerun_skips_finished_methods(bench: Path, cg_savos: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished row ran again")

    monkeypatch.setattr(benchmark, "train_row_run", fail)
    monkeypatch.setattr(benchmark, "evaluate_method", fail)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (bench / "methods").iterdir()}
    code, out, err = run(capsys, *_bench_args(cg_savos, bench))
    assert code == 0, err
    assert "| SaVos |" in out
    assert {p.name: p.stat().st_mtime_ns for p in (bench / "methods").iterdir()} == mtimes


def test_rerun_with_other_settings_is_refused(bench: Path, cg_savos: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *_bench_args(cg_savos, bench), "--seed", "1")
    assert_one_line_error(code, err, str(bench), "seed", "pick a new --out")


def test_missing_split_names_the_folder(cg_savos: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "only-test"
    data.mkdir()
    for p in cg_savos.glob("test-*.h5"):
        (data / p.name).symlink_to(p)
    code, _, err = run(capsys, "benchmark", "--data", str(data), "--out", str(tmp_path / "a"),
                       "--methods", "convex,savos", "--quiet")
    assert_one_line_error(code, err, str(data), "train-*.h5")
    code, _, err = run(capsys, "benchmark", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, str(tmp_path / "nowhere"), "gen-chewing-gum")
    code, _, err = run(capsys, "benchmark", "--data", str(data), "--out", str(tmp_path / "c"),
                       "--methods", "convex", "--quiet")
    assert code == 0, err
    assert set(_strict_json(tmp_path / "c" / "results.json")["methods"]) == {"convex"}


def test_interrupted_training_resumes(cg_savos: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    real_before = TimeBudget.before_epoch
    real_init = Trainer.__init__
    epochs: list[int] = []
    resumes: list[bool] = []

    def interrupted(self: TimeBudget, trainer: Trainer, epoch: int) -> None:
        epochs.append(epoch)
        if epochs == [1, 2]:
            raise KeyboardInterrupt
        real_before(self, trainer, epoch)

    def counted(self: Trainer, cfg: object, *args: object, **kwargs: object) -> None:
        resumes.append(cfg.resume)
        real_init(self, cfg, *args, **kwargs)

    monkeypatch.setattr(TimeBudget, "before_epoch", interrupted)
    monkeypatch.setattr(Trainer, "__init__", counted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_tiny(cg_savos, out, epochs=2))
    assert not (out / "methods" / "savos.json").exists()
    assert (out / "runs" / "savos" / "commit.json").is_file()
    results = run_benchmark(_tiny(cg_savos, out, epochs=2))
    assert epochs == [1, 2, 2] and resumes == [False, True]
    log = [json.loads(line) for line in (out / "runs" / "savos" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    training = results["methods"]["savos"]["training"]
    assert training["epochs_run"] == 2 and training["stopped"] is None and training["train_seconds"] > 0
    monkeypatch.undo()
    straight = run_benchmark(_tiny(cg_savos, tmp_path / "straight", epochs=2))
    a = read_checkpoint(straight["methods"]["savos"]["training"]["checkpoint"]).state_dict
    b = read_checkpoint(training["checkpoint"]).state_dict
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], msg=k, rtol=0, atol=0)


def test_time_budget_stops_before_the_next_epoch(cg_savos: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    built: list[int] = []
    real_init = Trainer.__init__

    def counted(self: Trainer, *args: object, **kwargs: object) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", counted)
    results = run_benchmark(_tiny(cg_savos, tmp_path / "out", epochs=3, budget_minutes=1e-6))
    assert len(built) == 1, "the time budget is a hook of one loop, not a rebuild per epoch"
    training = results["methods"]["savos"]["training"]
    assert (training["epochs_run"], training["stopped"]) == (1, "time budget")
    assert "| SaVos | 1 (time budget) |" in (tmp_path / "out" / "results.md").read_text()
    assert "--epochs 1 " in results["methods"]["savos"]["commands"]["train"]


def test_ablations_and_tta(cg_savos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "out"
    cfg = _tiny(cg_savos, out, tta=True, tta_max_iters=2)
    cfg.ablations = ["no_flow"]
    run_benchmark(cfg)
    results = _strict_json(out / "results.json")
    entries = results["methods"]
    assert set(entries) == {"savos", "savos-tta", "savos-no_flow"}
    assert entries["savos-no_flow"]["paper"] == {"full": 0.8508, "occluded": 0.6188, "dataset": "FISHBOWL"}
    assert entries["savos-no_flow"]["evaluation"]["config"]["no_flow"] is True
    assert "--no-flow" in entries["savos-no_flow"]["commands"]["train"]
    assert entries["savos-tta"]["evaluation"]["tta"]["videos"] == 6
    assert entries["savos-tta"]["train_seconds"] is None
    assert entries["savos-tta"]["training"]["checkpoint"] == entries["savos"]["training"]["checkpoint"]
    md = (out / "ablations.md").read_text()
    assert "| SaVos (full model) |" in md and md.count("\n| SaVos w/o optical flow |") == 1
    assert "| .8863 | .7155 |" in md and "| .8508 | .6188 |" in md
    assert "w/o optical flow" not in (out / "results.md").read_text()


def test_config_helpers() -> None:
    assert parse_epochs(["3"]) == {"deocclusion": 3, "savos": 3, "unet": 3}
    assert parse_epochs(["2", "savos=5"]) == {"deocclusion": 2, "savos": 5, "unet": 2}
    with pytest.raises(AmodalkitError, match="NAME=N"):
        parse_epochs(["savos=x"])
    with pytest.raises(AmodalkitError, match="not trained"):
        parse_epochs(["convex=2"])
    cfg = benchmark_config("d", "o", ablations=True)
    assert cfg.ablations == list(ABLATIONS) and cfg.methods == list_models()
    with pytest.raises(AmodalkitError, match="unknown method"):
        benchmark_config("d", "o", "convex,fancy").validate()
    with pytest.raises(AmodalkitError, match="add savos"):
        benchmark_config("d", "o", "convex", ablations=True).validate()


def test_seeds_give_mean_and_spread(cg_savos: Path, tmp_path: Path) -> None:
    cfg = _tiny(cg_savos, tmp_path / "s", methods="convex,unet", seeds=[0, 1])
    cfg.train["unet"] = TrainBudget(epochs=1, batch_size=16, max_steps=2,
                                    options={"crop": "16x16", "channels": "4,8"})
    results = run_benchmark(cfg)
    unet = results["methods"]["unet"]
    assert set(unet["per_seed"]) == {"0", "1"} and unet["seed"] == [0, 1]
    occluded = [unet["per_seed"][s]["metrics"]["frame_miou_occluded"] for s in ("0", "1")]
    assert unet["spread"]["frame_miou_occluded"]["values"] == occluded
    assert unet["metrics"]["frame_miou_occluded"] == pytest.approx(sum(occluded) / 2)
    assert (tmp_path / "s" / "runs" / "unet" / "seed-1" / "best.safetensors").is_file()
    assert "spread" not in results["methods"]["convex"]
    md = (tmp_path / "s" / "results.md").read_text()
    assert " ± " in md and "Seeds 0, 1." in md and "--seeds 0,1" in md
    assert "Convex hull vs Supervised U-Net (oracle)" in md
    assert "seed-1" in unet["per_seed"]["1"]["commands"]["evaluate"]
    with pytest.raises(AmodalkitError, match="--seeds needs distinct"):
        _tiny(cg_savos, tmp_path / "t", methods="convex", seeds=[1, 1]).validate()


def test_jobs_train_in_workers_like_in_process(cg_savos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = _tiny(cg_savos, tmp_path / "par", jobs=2)
    cfg.ablations = ["no_flow"]
    results = run_benchmark(cfg)
    assert set(results["methods"]) == {"savos", "savos-no_flow"}
    assert "jobs" not in _strict_json(tmp_path / "par" / "config.json")
    threads = max(1, (os.cpu_count() or 1) // 2)
    for name in ("savos", "savos-no_flow"):
        assert results["methods"][name]["training"]["threads"] == threads
    row = next(r for r in plan_rows(cfg) if r.name == "savos-no_flow")
    alone = train_row_run(replace(cfg, out=str(tmp_path / "seq")), row, tmp_path / "seq" / "run", threads)
    worker = tmp_path / "par" / "runs" / "savos-no_flow" / "best.safetensors"
    ca, cw = read_checkpoint(alone), read_checkpoint(worker)
    a, w = ca.state_dict, cw.state_dict
    assert a.keys() == w.keys() and all(torch.equal(a[k], w[k]) for k in a), (ca.extra, cw.extra)
    assert train_rows_in_parallel(cfg, plan_rows(cfg), 2) == 0
