"""Commands for published results: the model zoo, the paper's tables (benchmark) and their page (report)."""

from __future__ import annotations

from pathlib import Path

import click

from amodalkit.cli.app import _hold, cli


@cli.group()
def zoo() -> None:
    """Pretrained models: list them, download their weights (verified by sha256)."""


@zoo.command("list")
def zoo_list() -> None:
    """Registered models with size, checksum, training data and measured metrics."""
    from amodalkit.zoo import format_registry, load_registry

    click.echo(format_registry(load_registry()))


@zoo.command("download")
@click.argument("name")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def zoo_download(name: str, quiet: bool) -> None:
    """Fetch NAME's weights into the per-user cache (no-op when shipped or cached)."""
    from amodalkit.zoo import fetch_weights

    click.echo(str(fetch_weights(name, quiet=quiet)))


@cli.command()
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of train-*.h5, val-*.h5 and test-*.h5 shards (amodalkit gen-chewing-gum DIR).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (a rerun into it resumes).")
@click.option("--methods", default=None,
              help="Comma-separated models to compare (default: every registered model, `amodalkit models`).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (trained methods).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every training.")
@click.option("--seeds", default=None,
              help="Comma-separated seeds: each trained row once per seed, reported as mean ± sd.")
@click.option("--epochs", multiple=True, metavar="[NAME=]N",
              help="Training epochs of every trained method (N) or of one (savos=N, deocclusion=N, unet=N; "
                   "repeatable; the ablations follow savos). Default savos 12, the others 10.")
@click.option("--budget-minutes", default=15.0, show_default=True, type=float,
              help="Per trained method: start no epoch that would end past this much training time "
                   "(0 = no cap). The epochs run are recorded.")
@click.option("--ablations", is_flag=True,
              help="Also train the five SaVos ablations of Table 2 (ablations.md).")
@click.option("--tta", is_flag=True, help="Also score SaVos with test-time adaptation (slow on CPU).")
@click.option("--tta-max-iters", default=20, show_default=True, type=int,
              help="Cap on adaptation steps per video.")
@click.option("--protocol", type=click.Choice(["official", "strict"]), default="official", show_default=True,
              help="Scoring rules for every row (see amodalkit evaluate --help).")
@click.option("--flow", "flow", default="", metavar="BACKEND",
              help="Copy the data to OUT/data-BACKEND and fill its flow with this backend first, so every "
                   "row trains and is scored on the same estimated flow (e.g. rigid, dis:fast, flownet2).")
@click.option("--flow-checkpoint", default="", help="Weights of a network --flow backend.")
@click.option("--jobs", default=1, show_default=True, type=int,
              help="Trainings at once, in worker processes (cores/N threads each; GPUs round-robin); "
                   "rows are scored after every training has finished.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def benchmark(data: Path, out: Path, methods: str | None, device: str, seed: int, seeds: str | None,
              epochs: tuple[str, ...], budget_minutes: float, ablations: bool, tta: bool, tta_max_iters: int,
              protocol: str, flow: str, flow_checkpoint: str, jobs: int, quiet: bool) -> None:
    """Train, score and compare methods: results.json, results.md (Table 1 layout), figure.png.

    \b
    The defaults are sized for 2 CPU cores and a set made by
      amodalkit gen-chewing-gum DIR --preset savos2022 --train 200 --val 50 --test 200 --seed 0
    SaVos (the zoo recipe: cpu preset, --ema 0.99, 12 epochs), Self-Deocclusion and the U-Net
    (10 epochs each) each train for at most --budget-minutes (15), so the run ends
    within an hour; --ablations adds five SaVos trainings of the same budget. Rows
    already in OUT/methods/ are skipped on a rerun and interrupted trainings resume.
    """
    from amodalkit.engine.seeds import parse_seeds
    from amodalkit.io.paths import refuse_overwrite
    from amodalkit.tables.benchmark import run_benchmark
    from amodalkit.tables.config import benchmark_config

    seed_list = parse_seeds(seeds, seed) or []
    refuse_overwrite({"--out": out}, [data], output_folders=True)
    _hold(out)
    cfg = benchmark_config(data, out, methods, epochs, ablations, device=device, seed=seed, seeds=seed_list,
                           budget_minutes=budget_minutes, tta=tta, tta_max_iters=tta_max_iters,
                           protocol=protocol, flow=flow, flow_checkpoint=flow_checkpoint, jobs=jobs,
                           quiet=quiet)
    run_benchmark(cfg)
    click.echo((out / "results.md").read_text().rstrip())
    extra = ", ablations.md" if ablations else ""
    click.echo(f"wrote results.json, results.md and figure.png{extra} in {out}")


@cli.command()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML page to write (self-contained: open it anywhere, offline).")
@click.option("--rescore", default="cheap", show_default=True, type=click.Choice(["none", "cheap", "all"]),
              help="Methods without per-video scores in RESULTS, when their shards are here: re-score none, "
                   "the rule-based ones (cheap), or all (also trained ones, from their checkpoints).")
@click.option("--worst", default=3, show_default=True, type=int,
              help="Worst videos to list and animate, methods side by side (0 = none).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (trained methods).")
def report(results: Path, out: Path, rescore: str, worst: int, device: str) -> None:
    """One HTML page of a benchmark results folder (or results.json) or an `evaluate --json` file.

    \b
    Tables with the command behind each number, per-video score distributions, the worst
    videos as animations (when their shards are present) and the benchmark figure; CSS,
    script and images are inlined, so the page needs no network.
    """
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.tables.html_report import write_report

    check_writable(out, "--out page")
    source = results / "results.json" if results.is_dir() else results
    refuse_overwrite({"--out": out}, [source, source.parent / "figure.png"])
    summary = write_report(results, out, rescore=rescore, worst=worst, device=device)
    scored = ", ".join(summary["per_video_rows"]) or "none"
    click.echo(f"wrote {out} ({summary['bytes'] // 1024} KiB): {summary['rows']} methods, per-video "
               f"scores of {scored}, {summary['animations']} animations")
