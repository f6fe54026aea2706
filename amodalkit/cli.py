"""The ``amodalkit`` command: one small function per subcommand, logic lives in the modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from amodalkit.errors import AmodalkitError

if TYPE_CHECKING:
    from amodalkit.models.base import AmodalMethod

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _hold(folder: Path) -> None:
    """Check and lock output `folder` for the rest of the command; clean its dead runs' temporary files."""
    from amodalkit.io.atomic import output_lock, remove_stale_temps
    from amodalkit.io.paths import check_writable

    check_writable(folder, "output folder", folder=True)
    click.get_current_context().with_resource(output_lock(folder))
    remove_stale_temps(folder)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="amodalkit")
def cli() -> None:
    """amodalkit: amodal video object segmentation datasets, preprocessing and models."""


@cli.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--json", "json_out", is_flag=True, help="Print the summaries as JSON.")
def info(shards: tuple[str, ...], json_out: bool) -> None:
    """Validate shards and print what they hold (exit 2 on an invalid shard)."""
    from amodalkit.evaluation.shard_stats import format_summary, summarize_shard
    from amodalkit.io.shards import expand_shard_paths

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
    _hold(out_dir)
    paths = generate_dataset(out_dir, cfg, splits, seed, videos_per_shard, jobs, quiet)
    counts = ", ".join(f"{k} {v}" for k, v in splits.items())
    click.echo(f"{len(paths)} shards in {out_dir} ({counts} videos)")


MODEL_HELP = "a registered model (`amodalkit models` lists them) or zoo:NAME"


def _one_model(model: str | None, alias: str | None) -> str | None:
    """``--model``, or its older spelling ``--method`` (kept as an alias for one release)."""
    if model is not None and alias is not None:
        raise AmodalkitError("--method is the old spelling of --model; give one of them")
    return model if model is not None else alias


def _model_method(model: str, checkpoint: str | None, device: str, quiet: bool,
                  options: dict | None = None) -> AmodalMethod:
    """``--model NAME`` as a method: rule-based with its options, trained from --checkpoint or zoo:NAME."""
    from amodalkit.device import resolve_device
    from amodalkit.models.registry import build_method, get_model_spec, method_from_checkpoint

    options = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    if model.startswith("zoo:"):
        from amodalkit.zoo import fetch_weights, get_entry

        if checkpoint is not None:
            raise AmodalkitError("--model zoo:NAME brings its own weights; drop --checkpoint")
        checkpoint = str(fetch_weights(model[4:], quiet=quiet))
        model = get_entry(model[4:]).model
    spec = get_model_spec(model)
    if not spec.trained:
        if checkpoint is not None:
            raise AmodalkitError(f"--model {model} is rule-based: it takes no --checkpoint")
        try:
            return build_method(model, **options)
        except TypeError as exc:
            flags = ", ".join("--" + k.replace("_", "-") for k in options)
            raise AmodalkitError(f"{flags}: not an option of --model {model}") from exc
    if options:
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise AmodalkitError(f"{flags}: options of rule-based models, not of --model {model}")
    if checkpoint is None:
        raise AmodalkitError(f"--model {model} needs --checkpoint FILE (or use --model zoo:NAME)")
    m = method_from_checkpoint(checkpoint, device=str(resolve_device(device)))
    if m.name != model:
        raise AmodalkitError(f"the checkpoint holds a {m.name!r} model, not {model!r}", checkpoint)
    return m


@cli.command()
def models() -> None:
    """List the registered models: name, kind and what each one is."""
    from amodalkit.models.registry import get_model_spec, list_models

    for name in list_models():
        spec = get_model_spec(name)
        click.echo(f"{name:<12} {'trained' if spec.trained else 'rule-based':<10} {spec.summary}")


@cli.command()
@click.option("--model", default=None, help=f"What to score: {MODEL_HELP}; trained ones need --checkpoint.")
@click.option("--method", default=None, hidden=True, help="Old spelling of --model.")
@click.option("--checkpoint", default=None, help="Checkpoint (.safetensors) of the trained --model.")
@click.option("--data", "data", required=True, multiple=True, help="Shard file, folder or glob (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON here.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (trained models).")
@click.option("--window", type=int, default=None,
              help="Frames per clip at inference (0 = whole video; default: the training clip length).")
@click.option("--tta", is_flag=True, help="Also score with test-time adaptation (both in the result).")
@click.option("--tta-max-iters", default=50, show_default=True, type=int,
              help="Cap on adaptation steps per video.")
@click.option("--tta-lr", default=1e-4, show_default=True, type=float, help="Adam learning rate of TTA.")
@click.option("--tta-chunk", default=16, show_default=True, type=int,
              help="Clips per TTA forward/backward (gradients accumulated over chunks; bounds memory).")
@click.option("--occlusion-range", nargs=2, type=float, default=None, metavar="LOW HIGH",
              help="Score only object-frames with occlusion rate in (LOW, HIGH); FISHBOWL: 0.1 0.7.")
@click.option("--k", "k", type=int, default=None, help="--model temporal: window of k frames (3 or 5).")
@click.option("--bidirectional", is_flag=True, help="--model temporal: also aggregate backwards in time.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(method: str | None, model: str | None, checkpoint: str | None, data: tuple[str, ...],
             json_path: Path | None, device: str, window: int | None, tta: bool, tta_max_iters: int,
             tta_lr: float, tta_chunk: int, occlusion_range: tuple[float, float] | None, k: int | None,
             bidirectional: bool, quiet: bool) -> None:
    """Score a method with the paper's frame- and object-level full/occluded mIoU."""
    from amodalkit.evaluation.evaluate import evaluate_method, format_table
    from amodalkit.io.atomic import write_json
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.io.shards import expand_shard_paths

    model = _one_model(model, method)
    if model is None:
        raise AmodalkitError("give --model NAME (e.g. convex, or savos --checkpoint FILE, or zoo:NAME)")
    paths = expand_shard_paths(data)
    if json_path is not None:
        check_writable(json_path, "--json file")
        refuse_overwrite({"--json": json_path}, [*paths, checkpoint])
    tta_config = None
    if tta:
        from amodalkit.models.savos.tta import TTAConfig

        tta_config = TTAConfig(max_iters=tta_max_iters, lr=tta_lr, chunk_size=tta_chunk)
    m = _model_method(model, checkpoint, device, quiet, {"k": k, "bidirectional": bidirectional})
    if tta and not hasattr(m, "with_tta"):
        raise AmodalkitError(f"--tta: --model {m.name} has no test-time adaptation")
    if window is not None:
        if not hasattr(m, "window"):
            raise AmodalkitError(f"--window: --model {m.name} predicts frame by frame, without clips")
        m.window = window
    keep = None
    if occlusion_range:
        from amodalkit.datasets.fishbowl import occlusion_range_filter

        keep = occlusion_range_filter(*occlusion_range)
    result = evaluate_method(m, paths, quiet=quiet, data=" ".join(data), object_filter=keep)
    if occlusion_range:
        result["occlusion_range"] = list(occlusion_range)
    click.echo(format_table(result))
    if tta:
        adapted = m.with_tta(tta_config)
        result["tta"] = evaluate_method(adapted, paths, quiet=quiet, data=" ".join(data), object_filter=keep)
        click.echo("with test-time adaptation:")
        click.echo(format_table(result["tta"]))
    if json_path is not None:
        write_json(json_path, result)
        click.echo(f"wrote {json_path}")


@cli.command()
@click.option("--model", default="savos", show_default=True,
              help="A trained model (`amodalkit models`): savos, or a per-frame baseline such as "
                   "deocclusion (self-supervised) or unet (amodal labels).")
@click.option("--data", "data", required=True, multiple=True, help="Training shards: file, folder or glob.")
@click.option("--val", "val", multiple=True,
              help="Validation shards (checkpoint selection; labels read only by --model unet).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder.")
@click.option("--epochs", default=20, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int,
              help="Object clips per step (per process).")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="Adam learning rate.")
@click.option("--lr-schedule", default="constant", show_default=True,
              type=click.Choice(["constant", "cosine"]), help="cosine: --lr decays towards 0 over --epochs.")
@click.option("--schedule-epochs", default=0, show_default=True, type=int,
              help="Length of the cosine schedule when it differs from --epochs (0 = --epochs).")
@click.option("--ema", default=0.0, show_default=True, type=float,
              help="Validate and save a moving average of the weights with this decay per step (0 = off).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes.")
@click.option("--threads", default=0, show_default=True, type=int,
              help="Torch CPU threads per process (0 = torch's default; 1 is faster on a busy machine).")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "fp16"]),
              help="bf16 or fp16 autocast (fp16: CUDA only, with a gradient scaler).")
@click.option("--deterministic", is_flag=True,
              help="torch.use_deterministic_algorithms(True): refuse nondeterministic GPU kernels.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last committed epoch.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--preset", default="paper", show_default=True, type=click.Choice(["paper", "small", "cpu"]),
              help="paper: §E.1 network on 64x128 crops; small: CPU-sized, 32x32 tracking crops; "
                   "cpu: small on whole videos with --mask-feedback --skips (the zoo model).")
@click.option("--crop", default=None, help="Crop size HxW: (4*2^n)x(8*2^n) or square, e.g. 32x64, 32x32.")
@click.option("--channels", default=None, help="Encoder channels, comma-separated (log2(H/4)+2 values).")
@click.option("--width", type=float, default=None, help="Multiplier on every channel count.")
@click.option("--hidden", type=int, default=None, help="LSTM / embedding size (paper: 256).")
@click.option("--clip-len", type=int, default=None, help="Frames per training clip (0 = whole video).")
@click.option("--clip-stride", default=0, show_default=True, type=int,
              help="Clip start step (0 = clip length).")
@click.option("--enlarge", type=float, default=None, help="Crop box enlargement around the visible masks.")
@click.option("--crop-mode", default=None, type=click.Choice(["clip", "track"]),
              help="clip: one box per clip (default); track: the box follows the object's mean flow.")
@click.option("--lambda-mask", type=float, default=None, help="Weight of the masked BCE loss L_M.")
@click.option("--lambda-consistency", type=float, default=None, help="Weight of the consistency loss L_C.")
@click.option("--horizon", type=int, default=None,
              help="Frames ahead each completion is warped and checked against the visible masks "
                   "(1 = the paper's L_M; more = appendix B's L_complete, truncated).")
@click.option("--lambda-horizon", type=float, default=None, help="Weight of the --horizon term.")
@click.option("--mask-feedback", is_flag=True,
              help="Feed the completor its own warped previous completion beside V_t (not in the paper).")
@click.option("--skips", is_flag=True,
              help="Skip connections from the mask encoder to the completor's decoder (not in the paper).")
@click.option("--warp", default=None, type=click.Choice(["splat", "sample"]), help="Forward warp kind.")
@click.option("--no-consistency", is_flag=True, help="Ablation: no consistency loss.")
@click.option("--no-bidirectional", is_flag=True, help="Ablation: forward direction only.")
@click.option("--no-temporal", is_flag=True, help="Ablation: no LSTM temporal embedding.")
@click.option("--no-flow", is_flag=True, help="Ablation: no optical flow input to the encoder.")
@click.option("--no-image", is_flag=True, help="Ablation: no image input to the encoder.")
@click.option("--max-steps", default=0, show_default=True, type=int,
              help="Stop after this many optimizer steps in all (0 = no cap; the last epoch still saves).")
def train(model: str, data: tuple[str, ...], val: tuple[str, ...], out: Path, epochs: int, batch_size: int,
          lr: float, lr_schedule: str, schedule_epochs: int, ema: float, seed: int, device: str,
          workers: int, threads: int, precision: str, deterministic: bool, resume: bool, quiet: bool,
          preset: str, clip_stride: int, max_steps: int, **model_options: object) -> None:
    """Train SaVos or a per-frame baseline; keeps best/last checkpoints in --out.

    SaVos and deocclusion are self-supervised (no amodal label is read, not even on --val);
    unet is the supervised oracle and reads the amodal ground truth of --data and --val.
    The per-frame models take --crop, --channels, --enlarge and --no-image; every model takes
    --ema, --max-steps, --precision and torchrun.
    """
    from amodalkit.device import dist_info
    from amodalkit.engine import TrainConfig, train_model
    from amodalkit.io.paths import expand_inputs, refuse_overwrite
    from amodalkit.models.registry import get_model_spec

    spec = get_model_spec(model)
    if not spec.trained:
        raise AmodalkitError(f"--model {model} is rule-based and has nothing to train")
    refuse_overwrite({"--out": out}, expand_inputs([*data, *val]), output_folders=True)
    if dist_info().main:
        _hold(out)

    cfg = TrainConfig(data=list(data), val=list(val), out=str(out), epochs=epochs, batch_size=batch_size,
                      lr=lr, lr_schedule=lr_schedule, schedule_epochs=schedule_epochs, ema=ema, seed=seed,
                      device=device, workers=workers, threads=threads, clip_stride=clip_stride,
                      precision=precision, max_steps=max_steps, deterministic=deterministic, resume=resume,
                      quiet=quiet)
    cfg.validate()
    model_cfg = spec.build_config(preset=preset, clip_stride=clip_stride, **model_options)
    summary = train_model(cfg, model, model_cfg)
    click.echo(f"best epoch {summary['best_epoch']} ({summary['selected_on']} loss "
               f"{summary['best_loss']:.4f}); checkpoints in {out}")


@cli.command()
@click.argument("shard")
@click.option("--video", "video_index", default=0, show_default=True, type=int,
              help="Video index in the shard.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.png (strip of frames) or FILE.gif (animation).")
@click.option("--model", "models_", multiple=True,
              help=f"Also show this model's prediction ({MODEL_HELP}); repeatable.")
@click.option("--method", "aliases", multiple=True, hidden=True, help="Old spelling of --model.")
@click.option("--checkpoint", default=None, help="Checkpoint (.safetensors) of the one trained --model NAME.")
@click.option("--frames", "n_frames", default=8, show_default=True, type=int, help="Frames in a PNG strip.")
@click.option("--scale", default=4, show_default=True, type=int, help="Pixel magnification.")
def show(shard: str, video_index: int, out: Path, models_: tuple[str, ...], aliases: tuple[str, ...],
         checkpoint: str | None, n_frames: int, scale: int) -> None:
    """Draw a video: visible masks, amodal ground-truth and optionally models' predictions (--model)."""
    from amodalkit.evaluation.evaluate import predict_binary
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.io.shards import ShardReader
    from amodalkit.models.registry import get_model_spec
    from amodalkit.viz import save_video_picture

    if n_frames < 1 or scale < 1:
        raise AmodalkitError("--frames and --scale must be at least 1")
    names = [*aliases, *models_]
    needing = [n for n in names if not n.startswith("zoo:") and get_model_spec(n).trained]
    if checkpoint is not None and len(needing) != 1:
        raise AmodalkitError("--checkpoint goes with exactly one trained --model NAME")
    check_writable(out, "--out picture")
    refuse_overwrite({"--out": out}, [shard, checkpoint])
    with ShardReader(shard) as r:
        if not 0 <= video_index < len(r):
            raise AmodalkitError(f"--video {video_index} is out of range (shard has {len(r)} videos)", shard)
        video = r.read_video(video_index)
    preds = {}
    for name in names:
        m = _model_method(name, checkpoint if name in needing else None, "auto", quiet=True)
        preds[name.removeprefix("zoo:")] = predict_binary(m, video)
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
    from amodalkit.io.paths import check_writable
    from amodalkit.io.shards import expand_shard_paths
    from amodalkit.preprocess.flow.backends import get_flow_backend
    from amodalkit.preprocess.flow.stage import describe_flow_file, fill_shards_flow, write_folder_flow

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
        outs = write_folder_flow(frames_glob, out_dir, estimator, fmt, batch_size, quiet)
        click.echo(f"wrote {len(outs)} {fmt} flow files to {out_dir}")
        return
    done = fill_shards_flow(shard_paths, estimator, batch_size, quiet)
    skipped = f" ({len(shard_paths) - len(done)} already had it)" if len(done) < len(shard_paths) else ""
    click.echo(f"{estimator.name} flow in {len(done)} shards{skipped}")


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
@click.option("--mots", help="Tracks: KITTI-MOTS or PointTrack .txt file, or a folder of instance PNGs.")
@click.option("--masks", help="Per-frame instance masks to link (same formats, ids need not persist).")
@click.option("--frames", "frames_glob", required=True,
              help="Frame images: a quoted glob 'DIR/*.png' or a folder.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Shard to write.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "mots", "pointtrack", "png"]), help="Format of --mots / --masks.")
@click.option("--class", "classes", multiple=True,
              help="Keep this class only: car, pedestrian or an id (repeatable).")
@click.option("--tracker", type=click.Choice(["file", "builtin"]),
              help="file: keep the ids of --mots (default); builtin: link masks (default with --masks).")
@click.option("--flow", "flow_backend", help="Compute and store flow with this backend (e.g. dis); the "
              "builtin tracker then warps masks along it.")
@click.option("--iou-threshold", default=0.3, show_default=True, type=float, help="Builtin tracker: min IoU.")
@click.option("--max-gap", default=3, show_default=True, type=int,
              help="Builtin tracker: frames a track may miss.")
@click.option("--name", help="Video name in the shard (default: the frames' folder name).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tracks(mots: str | None, masks: str | None, frames_glob: str, out: Path, fmt: str,
           classes: tuple[str, ...], tracker: str | None, flow_backend: str | None, iou_threshold: float,
           max_gap: int, name: str | None, quiet: bool) -> None:
    """Turn frames plus tracks (KITTI-MOTS, PointTrack, instance PNGs) or linked masks into a shard."""
    import glob

    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.preprocess.tracks.build import build_tracks_shard, list_frame_files

    check_writable(out, "--out shard")
    sources = [str(Path(glob.escape(s)) / "*.png") if Path(s).is_dir() else s for s in (mots, masks) if s]
    refuse_overwrite({"--out": out}, [*list_frame_files(frames_glob), *sources])
    video = build_tracks_shard(out, frames_glob, mots=mots, masks=masks, fmt=fmt, classes=classes or None,
                               tracker=tracker, flow=flow_backend, iou_threshold=iou_threshold,
                               max_gap=max_gap, name=name, quiet=quiet)
    click.echo(f"wrote {out}: video {video.name!r}, {video.num_frames} frames, {video.num_objects} tracks")


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
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (flow networks).")
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
    from amodalkit.datasets.kins_video import BuildConfig, build_kins_video, format_summary
    from amodalkit.io.paths import refuse_overwrite

    written = (kins_video.RECORD_FILE, kins_video.REPORT_FILE, kins_video.SPLIT_FILE, kins_video.SUMMARY_FILE)
    refuse_overwrite([("--out", out_dir / name) for name in written], [*kins_json, checkpoint])
    _hold(out_dir)
    cfg = BuildConfig(tracks=tracks, context=context, flow=flow, checkpoint=checkpoint, device=device,
                      split_seed=split_seed, match_tolerance=match_tolerance, keep_unoccluded=keep_unoccluded,
                      search_unmapped=search_unmapped)
    summary = build_kins_video(kitti_raw, kitti_devkit, kitti_object, list(kins_json), out_dir, cfg, jobs,
                               scheduler, quiet)
    click.echo(format_summary(summary))
    click.echo(f"shards, match_report.json, splits.json and summary.json in {out_dir}")


@cli.command("import-fishbowl")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for {split}-{index:05d}.h5 shards.")
@click.option("--split", default=None, help="Shard name prefix (default: the folder holding the samples).")
@click.option("--videos-per-shard", default=20, show_default=True, type=int)
@click.option("--limit", type=int, default=None, help="Import only the first N samples.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Parallel worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_fishbowl_cmd(src: Path, out_dir: Path, split: str | None, videos_per_shard: int, limit: int | None,
                        jobs: int, quiet: bool) -> None:
    """Read a FISHBOWL release (SRC/NNNNN/{video.mp4, objects.json, objectMMM/}) into shards.

    \b
    SRC holds sample folders, either as the generator writes them
      SRC/00000/video.mp4, objects.json (visible masks), object000/objects.json (amodal), ...
    or as in the SaVos authors' copy
      test_data/test/00000/objects.json, test_data/test_objects/00000_object<ID>/objects.json,
      test_data/test_frames/00000/*.png
    Each object's per-frame occlusion rate is stored; score FISHBOWL like the paper with
    `amodalkit evaluate ... --occlusion-range 0.1 0.7`.
    """
    from amodalkit.datasets.fishbowl import import_fishbowl
    from amodalkit.io.paths import refuse_overwrite

    refuse_overwrite({"--out": out_dir}, [src], output_folders=True)
    _hold(out_dir)
    paths = import_fishbowl(src, out_dir, split, videos_per_shard, limit, jobs, quiet)
    click.echo(f"{len(paths)} shards in {out_dir}")


@cli.command("export-coco")
@click.argument("shards", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ground truth as COCO JSON with KINS field names (segmentation, inmodal_seg, ...).")
@click.option("--model", default=None,
              help=f"Also export this model's predictions as a COCO results list ({MODEL_HELP}).")
@click.option("--method", default=None, hidden=True, help="Old spelling of --model.")
@click.option("--checkpoint", default=None, help="Checkpoint (.safetensors) of the trained --model.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] (trained models).")
@click.option("--pred-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Predictions file (default: OUT with _MODEL_results.json).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_coco_cmd(shards: tuple[str, ...], out: Path, model: str | None, method: str | None,
                    checkpoint: str | None, device: str, pred_out: Path | None, quiet: bool) -> None:
    """Write the scored ground truth (and a method's predictions) of SHARDS as COCO-style amodal JSON."""
    from amodalkit.evaluation.coco import export_coco
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.io.shards import expand_shard_paths

    model = _one_model(model, method)
    if checkpoint is not None and model is None:
        raise AmodalkitError("--checkpoint goes with --model")
    m = _model_method(model, checkpoint, device, quiet) if model is not None else None
    if m is not None and pred_out is None:
        pred_out = out.with_name(f"{out.stem}_{model.removeprefix('zoo:')}_results.json")
    paths = expand_shard_paths(shards)
    for target, what in ((out, "--out file"), (pred_out, "--pred-out file")):
        if target is not None:
            check_writable(target, what)
    refuse_overwrite({"--out": out, "--pred-out": pred_out}, paths)
    counts = export_coco(paths, out, m, pred_out, quiet)
    click.echo(f"wrote {out}: {counts['images']} images, {counts['annotations']} annotations")
    if m is not None:
        click.echo(f"wrote {pred_out}: {counts['predictions']} predictions")


@cli.command()
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of train-*.h5, val-*.h5 and test-*.h5 shards (amodalkit gen-chewing-gum DIR).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (a rerun into it resumes).")
@click.option("--methods", default="convex,temporal,deocclusion,savos,unet", show_default=True,
              help="Comma-separated; temporal gives the rows k=3, k=5 and k=5 bi-directional.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (trained methods).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every training.")
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
@click.option("--quiet", is_flag=True, help="No progress bars.")
def benchmark(data: Path, out: Path, methods: str, device: str, seed: int, epochs: tuple[str, ...],
              budget_minutes: float, ablations: bool, tta: bool, tta_max_iters: int, quiet: bool) -> None:
    """Train, score and compare methods: results.json, results.md (Table 1 layout), figure.png.

    \b
    The defaults are sized for 2 CPU cores and a set made by
      amodalkit gen-chewing-gum DIR --preset savos2022 --train 200 --val 50 --test 200 --seed 0
    SaVos (the zoo recipe: cpu preset, --ema 0.99, 12 epochs), Self-Deocclusion and the U-Net
    (10 epochs each) each train for at most --budget-minutes (15), so the run ends
    within an hour; --ablations adds five SaVos trainings of the same budget. Rows
    already in OUT/methods/ are skipped on a rerun and interrupted trainings resume.
    """
    from amodalkit.io.paths import refuse_overwrite
    from amodalkit.tables.benchmark import make_config, run_benchmark

    refuse_overwrite({"--out": out}, [data], output_folders=True)
    _hold(out)
    cfg = make_config(data, out, methods, epochs, ablations, device=device, seed=seed,
                      budget_minutes=budget_minutes, tta=tta, tta_max_iters=tta_max_iters, quiet=quiet)
    run_benchmark(cfg)
    click.echo((out / "results.md").read_text().rstrip())
    extra = ", ablations.md" if ablations else ""
    click.echo(f"wrote results.json, results.md and figure.png{extra} in {out}")


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
        click.echo(f"error: {exc.filename or 'a file'}: permission denied", err=True)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}".splitlines()[0], err=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
