"""Commands that make and inspect shards: generate, import, build, flow, tracks, info."""

from __future__ import annotations

import json
from pathlib import Path

import click

from amodalkit.cli.app import _hold, cli, scheduler_option
from amodalkit.errors import AmodalkitError


@cli.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--json", "json_out", is_flag=True, help="Print the summaries as JSON.")
def info(shards: tuple[str, ...], json_out: bool) -> None:
    """Validate shards and print what they hold (exit 2 on an invalid shard)."""
    from amodalkit.evaluation.shard_stats import format_summary, summarize_shard
    from amodalkit.io.shards import expand_shard_paths

    summaries = [summarize_shard(p) for p in expand_shard_paths(shards, remote=True)]
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
@scheduler_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def gen_chewing_gum(out_dir: Path, preset: str, train: int | None, val: int | None, test: int | None,
                    frames: int | None, objects: int | None, height: int | None, width: int | None,
                    videos_per_shard: int, seed: int, jobs: int, scheduler: str | None, quiet: bool) -> None:
    """Generate Chewing Gum videos into OUT_DIR/{split}-{index:05d}.h5 (re-runs skip done shards)."""
    from amodalkit.datasets.chewing_gum import PRESET_SPLITS, generate_dataset, make_config
    from amodalkit.execution import scheduler_address

    cfg = make_config(preset, frames=frames, objects=objects, height=height, width=width)
    defaults = PRESET_SPLITS[preset]
    splits = {"train": defaults[0] if train is None else train,
              "val": defaults[1] if val is None else val,
              "test": defaults[2] if test is None else test}
    if jobs < 1:
        raise AmodalkitError("--jobs must be at least 1")
    _hold(out_dir)
    paths = generate_dataset(out_dir, cfg, splits, seed, videos_per_shard, jobs, quiet,
                             scheduler_address(scheduler))
    counts = ", ".join(f"{k} {v}" for k, v in splits.items())
    click.echo(f"{len(paths)} shards in {out_dir} ({counts} videos)")


@cli.command()
@click.argument("shards", nargs=-1)
@click.option("--backend", default="dis", show_default=True, help="dis | flownet2 | ptlflow:NAME")
@click.option("--checkpoint", help="Weights: FlowNet2_checkpoint.pth.tar for flownet2, a ptlflow "
              "checkpoint name or file for ptlflow:NAME.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] (flow networks).")
@click.option("--batch-size", default=4, show_default=True, type=int, help="Frame pairs per network call.")
@click.option("--frames", "frames_glob", help="Instead of shards: a quoted glob of frames, e.g. 'DIR/*.png'.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for --frames (one file per consecutive pair, named after its first frame).")
@click.option("--format", "fmt", default="flo", show_default=True, type=click.Choice(["flo", "kitti-png"]),
              help="File format for --frames.")
@click.option("--jobs", default=1, show_default=True, type=int,
              help="Shards filled at once by local worker processes (each builds its own backend).")
@scheduler_option
@click.option("--inspect", "inspect_files", multiple=True, type=click.Path(dir_okay=False),
              help="Only read .flo / KITTI .png flow files and describe them (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def flow(shards: tuple[str, ...], backend: str, checkpoint: str | None, device: str, batch_size: int,
         frames_glob: str | None, out_dir: Path | None, fmt: str, jobs: int, scheduler: str | None,
         inspect_files: tuple[str, ...], quiet: bool) -> None:
    """Fill forward + backward optical flow of every video in SHARDS (atomic rewrite), or write flow files."""
    from amodalkit.execution import run_on_devices, run_tasks, scheduler_address, worker_devices
    from amodalkit.io.paths import check_writable
    from amodalkit.io.shards import expand_shard_paths
    from amodalkit.preprocess.flow.backends import get_flow_backend, require_frames_only
    from amodalkit.preprocess.flow.stage import (
        describe_flow_file,
        fill_shard_on,
        fill_shard_task,
        fill_shards_flow,
        shard_has_flow,
        write_folder_flow,
    )

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
    if frames_glob:
        check_writable(out_dir, "--out folder", folder=True)
    else:
        shard_paths = expand_shard_paths(shards)
        for p in shard_paths:
            check_writable(p, "shard")
    estimator = get_flow_backend(backend, checkpoint, device)
    if frames_glob:
        require_frames_only(estimator, "flow --frames")
        outs = write_folder_flow(frames_glob, out_dir, estimator, fmt, batch_size, quiet)
        click.echo(f"wrote {len(outs)} {fmt} flow files to {out_dir}")
        return
    scheduler = scheduler_address(scheduler)
    if jobs < 1:
        raise AmodalkitError("--jobs must be at least 1")
    if jobs == 1 and scheduler is None:
        done = fill_shards_flow(shard_paths, estimator, batch_size, quiet)
    else:
        todo = [p for p in shard_paths if not shard_has_flow(p, estimator)]
        tasks = [(p, backend, checkpoint, device, batch_size) for p in todo]
        on_gpu = str(getattr(estimator, "device", "cpu")).startswith("cuda")
        devices = worker_devices(device, jobs) if on_gpu and scheduler is None else []
        if len(set(devices)) > 1 and len(tasks) > 1:  # one worker per visible GPU, each on its own
            done = run_on_devices(fill_shard_on, tasks, devices[:len(tasks)], quiet, unit="shard")
        else:
            done = run_tasks(fill_shard_task, tasks, jobs, scheduler, quiet, unit="shard",
                             resources={"GPU": 1} if on_gpu else None)
    skipped = f" ({len(shard_paths) - len(done)} already had it)" if len(done) < len(shard_paths) else ""
    click.echo(f"{estimator.name} flow in {len(done)} shards{skipped}")


@cli.command()
@click.option("--mots", help="Tracks: KITTI-MOTS or PointTrack .txt file, or a folder of instance PNGs.")
@click.option("--masks", help="Per-frame instance masks to link (same formats, ids need not persist).")
@click.option("--frames", "frames_glob", required=True,
              help="Frame images: a quoted glob 'DIR/*.png' or a folder.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Shard to write (with --sequences: the folder of NAME.h5 shards).")
@click.option("--sequences", is_flag=True,
              help="Many sequences: --mots is a folder of NAME.txt, --frames a folder of NAME/ frame folders "
                   "(the KITTI-MOTS / PointTrack layout); one shard per sequence, skipping finished ones.")
@click.option("--jobs", default=1, show_default=True, type=int, help="--sequences: parallel processes.")
@scheduler_option
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "mots", "pointtrack", "png"]), help="Format of --mots / --masks.")
@click.option("--class", "classes", multiple=True,
              help="Keep this class only: car, pedestrian or an id (repeatable).")
@click.option("--segment", type=click.Choice(["pointtrack"]),
              help="Segment the frames themselves (not --mots / --masks): PointTrack from its weights.")
@click.option("--seg-checkpoint", help="--segment pointtrack: the released best_seed_model.pthCar (cars).")
@click.option("--track-checkpoint", help="--segment pointtrack: the released PointTrack.pthCar (tracker).")
@click.option("--tracker", type=click.Choice(["file", "builtin", "pointtrack"]),
              help="file: keep the ids of --mots (default); builtin: link masks (default with --masks); "
                   "pointtrack: PointTrack's own tracker (default with --segment pointtrack).")
@click.option("--flow", "flow_backend", help="Compute and store flow with this backend (dis, flownet2, "
              "ptlflow:NAME); the builtin tracker then warps masks along it.")
@click.option("--flow-checkpoint", help="Weights for --flow: FlowNet2_checkpoint.pth.tar for flownet2, a "
              "ptlflow checkpoint name or file for ptlflow:NAME.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] (flow networks).")
@click.option("--iou-threshold", default=0.3, show_default=True, type=float, help="Builtin tracker: min IoU.")
@click.option("--max-gap", default=3, show_default=True, type=int,
              help="Builtin tracker: frames a track may miss.")
@click.option("--name", help="Video name in the shard (default: the frames' folder name).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tracks(mots: str | None, masks: str | None, frames_glob: str, out: Path, sequences: bool, jobs: int,
           scheduler: str | None, fmt: str, classes: tuple[str, ...], segment: str | None,
           seg_checkpoint: str | None, track_checkpoint: str | None, tracker: str | None,
           flow_backend: str | None, flow_checkpoint: str | None, device: str, iou_threshold: float,
           max_gap: int, name: str | None, quiet: bool) -> None:
    """Turn frames plus tracks (KITTI-MOTS, PointTrack, instance PNGs) or linked masks into a shard."""
    import glob

    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.preprocess.tracks.build import build_tracks_shard, list_frame_files

    if sequences:
        from amodalkit.preprocess.tracks.batch import SequenceOptions

        if masks or segment or name:
            raise AmodalkitError("--sequences takes --mots TRACKS_DIR and --frames FRAMES_DIR "
                                 "(not --masks, --segment or --name)")
        options = SequenceOptions(fmt, classes or None, tracker, flow_backend, flow_checkpoint, device,
                                  iou_threshold, max_gap)
        _tracks_of_sequences(mots, frames_glob, out, options, jobs, scheduler, quiet)
        return
    check_writable(out, "--out shard")
    sources = [str(Path(glob.escape(s)) / "*.png") if Path(s).is_dir() else s for s in (mots, masks) if s]
    weights = [flow_checkpoint, seg_checkpoint, track_checkpoint]
    refuse_overwrite({"--out": out}, [*list_frame_files(frames_glob), *sources, *weights])
    video = build_tracks_shard(out, frames_glob, mots=mots, masks=masks, fmt=fmt, classes=classes or None,
                               tracker=tracker, flow=flow_backend, iou_threshold=iou_threshold,
                               max_gap=max_gap, name=name, quiet=quiet, flow_checkpoint=flow_checkpoint,
                               device=device, segment=segment, seg_checkpoint=seg_checkpoint,
                               track_checkpoint=track_checkpoint)
    click.echo(f"wrote {out}: video {video.name!r}, {video.num_frames} frames, {video.num_objects} tracks")


def _tracks_of_sequences(mots: str | None, frames: str, out: Path, options: object, jobs: int,
                         scheduler: str | None, quiet: bool) -> None:
    """``tracks --sequences``: one shard per sequence of a track folder, on the execution layer."""
    from functools import partial

    from amodalkit.execution import run_tasks, scheduler_address
    from amodalkit.io.paths import refuse_overwrite
    from amodalkit.preprocess.tracks.batch import build_sequence, find_sequences, sequence_done

    if mots is None:
        raise AmodalkitError("--sequences needs --mots TRACKS_DIR (NAME.txt files)")
    if jobs < 1:
        raise AmodalkitError("--jobs must be at least 1")
    refuse_overwrite({"--out": out}, [mots, frames], output_folders=True)
    _hold(out)
    found = find_sequences(Path(mots), Path(frames), out)
    todo = [s for s in found if not sequence_done(s)]
    built = run_tasks(partial(build_sequence, options), todo, jobs, scheduler_address(scheduler), quiet,
                      unit="sequence")
    skipped = f" ({len(found) - len(todo)} already built)" if len(todo) < len(found) else ""
    click.echo(f"{len(built)} sequences written to {out}{skipped}: "
               f"{sum(b['tracks'] for b in built)} tracks in {sum(b['frames'] for b in built)} frames")


@cli.command("build-kins-video")
@click.option("--kitti-raw", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="KITTI raw root: RAW/DATE/DATE_drive_NNNN_sync/image_02/data/0000000000.png.")
@click.option("--kitti-devkit", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Object devkit root holding mapping/train_rand.txt and mapping/train_mapping.txt.")
@click.option("--kitti-object", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Object benchmark root holding training/image_2/000000.png (pixel verification).")
@click.option("--kins-json", "kins_json", required=True, multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="instances_train.json or update_train_2020.json (repeatable; release auto-detected).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: {split}-{drive}.h5, match_report.json, splits.json, summary.json.")
@click.option("--context", default=10, show_default=True, type=int,
              help="Raw frames kept before and after each annotated frame.")
@click.option("--tracks", required=True,
              help="pointtrack:DIR (PointTrack results, DIR/DRIVE.txt) or builtin:DIR (per-frame instance "
                   "masks, same files, linked by the built-in tracker).")
@click.option("--flow", default="dis", show_default=True, help="Flow backend: dis | flownet2 | ptlflow:NAME.")
@click.option("--checkpoint", default=None, help="FlowNet2_checkpoint.pth.tar for --flow flownet2.")
@click.option("--device", default="auto", show_default=True,
              help="auto | cpu | cuda[:N] (flow networks; with --jobs N, auto and cuda give worker i the GPU "
                   "i modulo the GPUs visible).")
@click.option("--split-seed", default=0, show_default=True, type=int, help="Seed of the by-drive split.")
@click.option("--match-tolerance", default=0, show_default=True, type=int,
              help="Largest per-channel grey-level difference accepted between object image and raw frame.")
@click.option("--search-unmapped", is_flag=True,
              help="Search every drive for images the devkit does not map (reads all of KITTI raw).")
@click.option("--keep-unoccluded", is_flag=True,
              help="Also score paired cars whose KINS inmodal and amodal masks are equal.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Parallel worker processes (per drive).")
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://HOST:8786): run the per-drive tasks on that cluster "
                   "(pip install 'dask[distributed]'; workers must see the same paths).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build_kins_video_cmd(kitti_raw: Path, kitti_devkit: Path, kitti_object: Path, kins_json: tuple[Path, ...],
                         out_dir: Path, context: int, tracks: str, flow: str, checkpoint: str | None,
                         device: str, split_seed: int, match_tolerance: int, search_unmapped: bool,
                         keep_unoccluded: bool, jobs: int, scheduler: str | None, quiet: bool) -> None:
    """Build KINS-Video-Car: KINS cars matched to KITTI raw videos, flow, tracks, split by drive.

    \b
    Expected inputs (see docs/datasets.md):
      --kitti-raw     RAW/2011_09_26/2011_09_26_drive_0005_sync/image_02/data/0000000000.png
      --kitti-devkit  DEVKIT/mapping/train_rand.txt     one line, comma-separated 1-based indices
                      DEVKIT/mapping/train_mapping.txt  "2011_09_26 2011_09_26_drive_0005_sync 0000000109"
      --kitti-object  OBJECT/training/image_2/000000.png ... 007480.png
      --kins-json     instances_train.json (segmentation + inmodal_seg) or
                      update_train_2020.json (a_segm + i_segm); cars = category 4
      --tracks        DIR/2011_09_26_drive_0005_sync.txt, one line per object and frame:
                      "frame id class_id height width rle" (KITTI-MOTS columns, COCO RLE,
                      frame = raw frame number, class 1 = car)

    Object image N is raw frame mapping[rand[N]-1], verified pixel by pixel; mismatches are
    listed in OUT/match_report.json and never used. Re-runs skip finished drives.
    """
    from amodalkit.datasets import kins_video
    from amodalkit.datasets.kins_video import build_kins_video, format_build_summary
    from amodalkit.datasets.kins_video_plan import BuildConfig
    from amodalkit.io.paths import refuse_overwrite

    written = (kins_video.RECORD_FILE, kins_video.REPORT_FILE, kins_video.SPLIT_FILE, kins_video.SUMMARY_FILE)
    refuse_overwrite([("--out", out_dir / name) for name in written], [*kins_json, checkpoint])
    _hold(out_dir)
    cfg = BuildConfig(tracks=tracks, context=context, flow=flow, checkpoint=checkpoint, device=device,
                      split_seed=split_seed, match_tolerance=match_tolerance, keep_unoccluded=keep_unoccluded,
                      search_unmapped=search_unmapped)
    from amodalkit.execution import scheduler_address

    summary = build_kins_video(kitti_raw, kitti_devkit, kitti_object, list(kins_json), out_dir, cfg, jobs,
                               scheduler_address(scheduler), quiet)
    click.echo(format_build_summary(summary))
    click.echo(f"shards, match_report.json, splits.json and summary.json in {out_dir}")


@cli.command("import-chewing-gum")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for {split}-{index:05d}.h5 shards.")
@click.option("--videos-per-shard", default=100, show_default=True, type=int)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_chewing_gum_cmd(src: Path, out_dir: Path, videos_per_shard: int, quiet: bool) -> None:
    """Read the official SaVos Chewing Gum generator's output (SRC/{train,val,test}/VVVVV/FFFFF.png + .pkl).

    \b
    SRC is the folder utils/gen_chewgum.py writes (data/datasets/NAME). Visible masks come
    from the drawing order, the exact flow from the boxes' motion; each video is checked to
    be the official drawing of its annotations, pixel for pixel.
    """
    from amodalkit.datasets.chewing_gum_import import import_chewing_gum
    from amodalkit.io.paths import refuse_overwrite

    refuse_overwrite({"--out": out_dir}, [src], output_folders=True)
    _hold(out_dir)
    paths = import_chewing_gum(src, out_dir, videos_per_shard, quiet)
    click.echo(f"{len(paths)} shards in {out_dir}")


@cli.command("import-fishbowl")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for {split}-{index:05d}.h5 shards.")
@click.option("--split", default=None, help="Shard name prefix (default: the folder holding the samples).")
@click.option("--videos-per-shard", default=20, show_default=True, type=int)
@click.option("--limit", type=int, default=None, help="Import only the first N samples.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Parallel worker processes.")
@click.option("--official-filters", is_flag=True,
              help="Annotate only the SaVos test object set, filtered from SRC as their Data_Preprocess "
                   "notebook does (amodal > 400 px with a 16 px border margin, visible > 64 px, first runs, "
                   "amodal run > 10 frames, some frame 0.1 < occlusion < 0.7, run ends dropped).")
@click.option("--subtest", type=click.Path(dir_okay=False, path_type=Path),
              help="The SaVos test_subtest.csv: annotate only its rows with test == 1 (v_id = sample "
                   "number, obj_id = fish id, frame_id).")
@click.option("--savos-pkl", type=click.Path(dir_okay=False, path_type=Path),
              help="The SaVos test_data.pkl: amodal masks (FM) and object-frames from it, frames and "
                   "visible masks from SRC; its frames less each fish's first and last are annotated.")
@scheduler_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_fishbowl_cmd(src: Path, out_dir: Path, split: str | None, videos_per_shard: int, limit: int | None,
                        jobs: int, official_filters: bool, subtest: Path | None, savos_pkl: Path | None,
                        scheduler: str | None, quiet: bool) -> None:
    """Read a FISHBOWL release (SRC/NNNNN/{video.mp4, objects.json, objectMMM/}) into shards.

    \b
    SRC holds sample folders, either as the generator writes them
      SRC/00000/video.mp4, objects.json (visible masks), object000/objects.json (amodal), ...
    or as in the SaVos authors' copy
      test_data/test/00000/objects.json, test_data/test_objects/00000_object<ID>/objects.json,
      test_data/test_frames/00000/*.png
    Each object's per-frame occlusion rate is stored; score FISHBOWL like the paper with
    `amodalkit evaluate ... --protocol official` (or `--occlusion-range 0.1 0.7`).

    \b
    The paper's object set: --official-filters, --subtest test_subtest.csv and/or
    --savos-pkl test_data.pkl (given together, their selections intersect). Fishes
    outside it stay in the videos (they still occlude others) but are never scored
    (amodal_annotated false). The settings are recorded; a rerun into the same --out
    with other settings is refused.
    """
    from amodalkit.datasets.fishbowl import import_fishbowl
    from amodalkit.execution import scheduler_address
    from amodalkit.io.paths import refuse_overwrite

    refuse_overwrite({"--out": out_dir}, [src, subtest, savos_pkl], output_folders=True)
    _hold(out_dir)
    paths = import_fishbowl(src, out_dir, split, videos_per_shard, limit, jobs, quiet, official_filters,
                            subtest, savos_pkl, scheduler_address(scheduler))
    click.echo(f"{len(paths)} shards in {out_dir}")
