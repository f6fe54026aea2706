"""The ``amodalkit`` command: one small function per subcommand, logic lives in the modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from amodalkit.errors import AmodalkitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="amodalkit")
def cli() -> None:
    """amodalkit: amodal video object segmentation datasets, preprocessing and models."""


@cli.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--json", "json_out", is_flag=True, help="Print the summaries as JSON.")
def info(shards: tuple[str, ...], json_out: bool) -> None:
    """Validate shards and print what they hold (exit 2 on an invalid shard)."""
    from amodalkit.shards import expand_shard_paths
    from amodalkit.summary import format_summary, summarize_shard

    summaries = [summarize_shard(p) for p in expand_shard_paths(shards)]
    if json_out:
        click.echo(json.dumps(summaries, indent=2))
    else:
        click.echo("\n".join(format_summary(s) for s in summaries))


@cli.command("gen-chewing-gum")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", default="default", show_default=True, help="default | savos2022")
@click.option("--train", type=int, help="Training videos (preset default: 1000 / 10000).")
@click.option("--val", type=int, help="Validation videos (preset default: 100 / 500).")
@click.option("--test", type=int, help="Test videos (preset default: 200 / 1000).")
@click.option("--frames", type=int, help="Frames per video (preset default).")
@click.option("--objects", type=int, help="Objects per video (default preset: 2-4).")
@click.option("--height", type=int, help="Canvas height in pixels.")
@click.option("--width", type=int, help="Canvas width in pixels.")
@click.option("--videos-per-shard", default=100, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--jobs", default=1, show_default=True, type=int, help="Parallel worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def gen_chewing_gum(out_dir: Path, preset: str, train: int | None, val: int | None, test: int | None,
                    frames: int | None, objects: int | None, height: int | None, width: int | None,
                    videos_per_shard: int, seed: int, jobs: int, quiet: bool) -> None:
    """Generate Chewing Gum videos into OUT_DIR/{split}-{index:05d}.h5 (re-runs skip done shards)."""
    from amodalkit.datasets.chewing_gum import PRESET_SPLITS, generate_dataset, make_config

    cfg = make_config(preset, frames=frames, objects=objects, height=height, width=width)
    defaults = PRESET_SPLITS[preset]
    splits = {"train": defaults[0] if train is None else train,
              "val": defaults[1] if val is None else val,
              "test": defaults[2] if test is None else test}
    if jobs < 1:
        raise AmodalkitError("--jobs must be at least 1")
    paths = generate_dataset(out_dir, cfg, splits, seed, videos_per_shard, jobs, quiet)
    counts = ", ".join(f"{k} {v}" for k, v in splits.items())
    click.echo(f"{len(paths)} shards in {out_dir} ({counts} videos)")


@cli.command()
@click.option("--method", default=None, help="Registered method name, e.g. convex.")
@click.option("--data", "data", required=True, multiple=True, help="Shard file, folder or glob (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(method: str | None, data: tuple[str, ...], json_path: Path | None, quiet: bool) -> None:
    """Score a method with the paper's frame- and object-level full/occluded mIoU."""
    from amodalkit.atomic import write_json
    from amodalkit.evaluate import evaluate_method, format_table
    from amodalkit.models.registry import build_method
    from amodalkit.shards import expand_shard_paths

    if method is None:
        raise AmodalkitError("give --method NAME (e.g. --method convex)")
    m = build_method(method)
    paths = expand_shard_paths(data)
    result = evaluate_method(m, paths, quiet=quiet, data=" ".join(data))
    click.echo(format_table(result))
    if json_path is not None:
        write_json(json_path, result)
        click.echo(f"wrote {json_path}")


@cli.command()
@click.argument("shard")
@click.option("--video", "video_index", default=0, show_default=True, type=int,
              help="Video index in the shard.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.png (strip of frames) or FILE.gif (animation).")
@click.option("--method", default=None, help="Also show this method's prediction.")
@click.option("--frames", "n_frames", default=8, show_default=True, type=int, help="Frames in a PNG strip.")
@click.option("--scale", default=4, show_default=True, type=int, help="Pixel magnification.")
def show(shard: str, video_index: int, out: Path, method: str | None, n_frames: int, scale: int) -> None:
    """Draw a video: visible masks, amodal ground-truth and optionally a method's prediction."""
    from amodalkit.evaluate import predict_binary
    from amodalkit.models.registry import build_method
    from amodalkit.shards import ShardReader
    from amodalkit.viz import save_video_picture

    if n_frames < 1 or scale < 1:
        raise AmodalkitError("--frames and --scale must be at least 1")
    with ShardReader(shard) as r:
        if not 0 <= video_index < len(r):
            raise AmodalkitError(f"--video {video_index} is out of range (shard has {len(r)} videos)", shard)
        video = r.read_video(video_index)
    preds = {}
    if method is not None:
        preds[method] = predict_binary(build_method(method), video)
    amodal = video.amodal if video.amodal_annotated.any() else None
    save_video_picture(out, video.frames, video.visible_masks(), amodal, preds, n_frames, scale)
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("shards", nargs=-1)
@click.option("--backend", default="dis", show_default=True, help="dis | flownet2 | ptlflow:NAME")
@click.option("--checkpoint", help="Weights: FlowNet2_checkpoint.pth.tar for flownet2, a ptlflow "
              "checkpoint name or file for ptlflow:NAME.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", default=4, show_default=True, type=int, help="Frame pairs per network call.")
@click.option("--frames", "frames_glob", help="Instead of shards: a quoted glob of frames, e.g. 'DIR/*.png'.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for --frames (one file per consecutive pair, named after its first frame).")
@click.option("--format", "fmt", default="flo", show_default=True, type=click.Choice(["flo", "kitti-png"]),
              help="File format for --frames.")
@click.option("--inspect", "inspect_files", multiple=True, type=click.Path(dir_okay=False),
              help="Only read .flo / KITTI .png flow files and describe them (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def flow(shards: tuple[str, ...], backend: str, checkpoint: str | None, device: str, batch_size: int,
         frames_glob: str | None, out_dir: Path | None, fmt: str, inspect_files: tuple[str, ...],
         quiet: bool) -> None:
    """Fill forward + backward optical flow of every video in SHARDS (atomic rewrite), or write flow files."""
    from tqdm import tqdm

    from amodalkit.preprocess.flow import (
        count_flow_pairs,
        describe_flow_file,
        fill_shard_flow,
        get_flow_backend,
        list_frames,
        shard_has_flow,
        write_folder_flow,
    )
    from amodalkit.shards import expand_shard_paths

    if inspect_files:
        for f in inspect_files:
            click.echo(describe_flow_file(f))
        return
    if bool(shards) == bool(frames_glob):
        raise AmodalkitError("give either SHARD... or --frames 'DIR/*.png' --out DIR")
    if frames_glob and out_dir is None:
        raise AmodalkitError("--frames needs --out DIR")
    if batch_size < 1:
        raise AmodalkitError("--batch-size must be at least 1")
    estimator = get_flow_backend(backend, checkpoint, device)
    if frames_glob:
        n_pairs = len(list_frames(frames_glob)) - 1
        with tqdm(total=n_pairs, unit="pair", desc=estimator.name, disable=quiet) as bar:
            outs = write_folder_flow(frames_glob, out_dir, estimator, fmt, batch_size, bar.update)
        click.echo(f"wrote {len(outs)} {fmt} flow files to {out_dir}")
        return
    paths = expand_shard_paths(shards)
    todo = [p for p in paths if not shard_has_flow(p, estimator)]
    with tqdm(total=count_flow_pairs(todo), unit="pair", desc=estimator.name, disable=quiet) as bar:
        for p in todo:
            fill_shard_flow(p, estimator, batch_size, bar.update)
    click.echo(f"{estimator.name} flow in {len(todo)} shards"
               + (f" ({len(paths) - len(todo)} already had it)" if len(todo) < len(paths) else ""))


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="amodalkit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except AmodalkitError as exc:
        click.echo(f"error: {exc}", err=True)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
    except PermissionError as exc:
        click.echo(f"error: {exc.filename}: permission denied", err=True)
    except OSError as exc:
        click.echo(f"error: {exc.filename or ''}: {exc.strerror or exc}", err=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
