"""Commands that train, score and draw models: models, train, evaluate, show, export-coco."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from amodalkit.cli.app import _hold, cli, scheduler_option
from amodalkit.errors import AmodalkitError

if TYPE_CHECKING:
    from amodalkit.models.base import AmodalMethod

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
@click.option("--protocol", type=click.Choice(["official", "strict"]), default="official", show_default=True,
              help="Scoring rules for every method alike: official (the released SaVos evaluation, "
                   "which the paper's numbers come from: paste rule, occluded = other objects' visible "
                   "pixels, the FISHBOWL and KINS filters) or strict (no paste, occluded = outside the "
                   "own visible mask).")
@click.option("--k", "k", type=int, default=None, help="--model temporal: window of k frames (3 or 5).")
@click.option("--bidirectional", is_flag=True, help="--model temporal: also aggregate backwards in time.")
@click.option("--jobs", default=1, show_default=True, type=int,
              help="Score the shards in this many local processes (one task per shard, same numbers).")
@scheduler_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(method: str | None, model: str | None, checkpoint: str | None, data: tuple[str, ...],
             json_path: Path | None, device: str, window: int | None, tta: bool, tta_max_iters: int,
             tta_lr: float, tta_chunk: int, occlusion_range: tuple[float, float] | None, protocol: str,
             k: int | None, bidirectional: bool, jobs: int, scheduler: str | None, quiet: bool) -> None:
    """Score a method with the paper's frame- and object-level full/occluded mIoU.

    --data takes local shards and fsspec URLs (s3://, gs://, https://, memory://), read by
    byte ranges. --jobs N or --scheduler ADDRESS scores each shard as its own task and joins
    the results in shard order: the same numbers as one process.
    """
    from amodalkit.evaluation.evaluate import evaluate_method, format_table
    from amodalkit.execution import scheduler_address
    from amodalkit.io.atomic import write_json
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.io.shards import expand_shard_paths

    model = _one_model(model, method)
    if model is None:
        raise AmodalkitError("give --model NAME (e.g. convex, or savos --checkpoint FILE, or zoo:NAME)")
    paths = expand_shard_paths(data, remote=True)
    if json_path is not None:
        check_writable(json_path, "--json file")
        refuse_overwrite({"--json": json_path}, [*(p for p in paths if isinstance(p, Path)), checkpoint])
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
    spread = {"jobs": jobs, "scheduler": scheduler_address(scheduler)}
    result = evaluate_method(m, paths, quiet=quiet, data=" ".join(data), object_filter=keep,
                             protocol=protocol, **spread)
    if occlusion_range:
        result["occlusion_range"] = list(occlusion_range)
    click.echo(format_table(result))
    if tta:
        adapted = m.with_tta(tta_config)
        result["tta"] = evaluate_method(adapted, paths, quiet=quiet, data=" ".join(data), object_filter=keep,
                                        protocol=protocol, **spread)
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
              help="Validation shards (selection; labels read by unet and --select-by val_amodal_iou).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder.")
@click.option("--epochs", default=20, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int,
              help="Object clips per step (per process).")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="Adam learning rate.")
@click.option("--lr-schedule", default="constant", show_default=True,
              type=click.Choice(["constant", "cosine", "step"]),
              help="cosine: --lr decays towards 0 over --epochs; step: x --lr-gamma every --lr-step-epochs.")
@click.option("--lr-step-epochs", default=20, show_default=True, type=int, help="Epochs per lr step.")
@click.option("--lr-gamma", default=0.5, show_default=True, type=float, help="Factor per lr step.")
@click.option("--schedule-epochs", default=0, show_default=True, type=int,
              help="Length of the cosine schedule when it differs from --epochs (0 = --epochs).")
@click.option("--ema", default=0.0, show_default=True, type=float,
              help="Validate and save a moving average of the weights with this decay per step (0 = off).")
@click.option("--grad-clip", default=0.0, show_default=True, type=float,
              help="Clip each step's gradient norm over all weights to this (0 = off).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--seeds", default=None,
              help="Comma-separated seeds: one run per seed in OUT/seed-N; OUT/seeds.json holds the spread.")
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
@click.option("--preset", default="paper", show_default=True,
              type=click.Choice(["paper", "small", "cpu", "official"]),
              help="paper: §E.1 network on 64x128 crops; small: CPU-sized, 32x32 tracking crops; cpu: small "
                   "on whole videos with --mask-feedback --skips (the zoo model); official: the released "
                   "FISHBOWL scripts, loop settings too unless given (selects on ground truth; see docs).")
@click.option("--select-by", default="loss", show_default=True,
              type=click.Choice(["loss", "val_amodal_iou", "val_visible_iou"]),
              help="Best checkpoint: lowest loss, or highest --val IoU against the amodal GROUND TRUTH "
                   "(val_amodal_iou) or the visible masks (val_visible_iou).")
@click.option("--clips-per-object", default=0, show_default=True, type=int,
              help="Random clips of each object per epoch (0 = all; 1, --clip-stride 1: a random window).")
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
@click.option("--warp", default=None, type=click.Choice(["splat", "sample", "official"]), help="Warp kind.")
@click.option("--lambda-photometric", type=float, default=None, help="Weight of the photometric L1 term.")
@click.option("--no-consistency", is_flag=True, help="Ablation: no consistency loss.")
@click.option("--no-bidirectional", is_flag=True, help="Ablation: forward direction only.")
@click.option("--no-temporal", is_flag=True, help="Ablation: no LSTM temporal embedding.")
@click.option("--no-flow", is_flag=True, help="Ablation: no optical flow input to the encoder.")
@click.option("--no-image", is_flag=True, help="Ablation: no image input to the encoder.")
@click.option("--max-steps", default=0, show_default=True, type=int,
              help="Stop after this many optimizer steps in all (0 = no cap; the last epoch still saves).")
def train(model: str, data: tuple[str, ...], val: tuple[str, ...], out: Path, epochs: int, batch_size: int,
          lr: float, lr_schedule: str, lr_step_epochs: int, lr_gamma: float, schedule_epochs: int, ema: float,
          grad_clip: float, seed: int, seeds: str | None, device: str, workers: int, threads: int,
          precision: str, deterministic: bool, resume: bool, quiet: bool, preset: str, select_by: str,
          clips_per_object: int, clip_stride: int, max_steps: int, **model_options: object) -> None:
    """Train SaVos or a per-frame baseline; keeps best/last checkpoints in --out.

    SaVos and deocclusion are self-supervised (no amodal label is read, not even on --val,
    unless --select-by val_amodal_iou, which --preset official sets, picks the checkpoint on
    it); unet is the supervised oracle and reads the amodal ground truth of --data and --val.
    The per-frame models take --crop, --channels, --enlarge and --no-image; every model takes
    --ema, --grad-clip, --max-steps, --precision and torchrun."""
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

    from amodalkit.engine.seeds import parse_seeds

    seed_list = parse_seeds(seeds, seed)
    loop = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule,
            "lr_step_epochs": lr_step_epochs, "lr_gamma": lr_gamma, "select_by": select_by,
            "clips_per_object": clips_per_object, "clip_stride": clip_stride}
    loop |= _preset_loop_defaults(spec.config, preset)
    cfg = TrainConfig(data=list(data), val=list(val), out=str(out), schedule_epochs=schedule_epochs, ema=ema,
                      grad_clip=grad_clip, seed=seed, device=device, workers=workers, threads=threads,
                      precision=precision, max_steps=max_steps, deterministic=deterministic, resume=resume,
                      quiet=quiet, **loop)
    cfg.validate()
    model_cfg = spec.build_config(preset=preset, clip_stride=cfg.clip_stride, **model_options)
    if cfg.select_by == "val_amodal_iou":
        click.echo("note: --select-by val_amodal_iou (as the released SaVos scripts) picks the checkpoint "
                   "by IoU against the amodal ground truth of --val: not self-supervised", err=True)
    if seed_list is None:
        summary = train_model(cfg, model, model_cfg)
        truth = ", amodal ground truth" if summary["selection_uses_amodal_ground_truth"] else ""
        chosen = (f"{summary['selected_on']} loss {summary['best_loss']:.4f}" if cfg.select_by == "loss"
                  else f"{cfg.select_by} {summary['best_score']:.4f}{truth}")
        click.echo(f"best epoch {summary['best_epoch']} ({chosen}); checkpoints in {out}")
        return
    from amodalkit.engine.seeds import train_seeds

    record = train_seeds(cfg, model, model_cfg, seed_list)
    spread = record["best_loss"]
    click.echo(f"{len(seed_list)} seeds: best {record['selected_on']} loss {spread['mean']:.4f} "
               f"± {spread['sd']:.4f} (sd); runs in {out}/seed-N, summary in {out}/seeds.json")


def _preset_loop_defaults(config_class: type | None, preset: str) -> dict:
    """Loop options a model preset sets (``SavosConfig.train_defaults``) that the command line left out."""
    from click.core import ParameterSource

    wanted = getattr(config_class, "train_defaults", lambda _preset: {})(preset)
    ctx = click.get_current_context()
    return {k: v for k, v in wanted.items() if ctx.get_parameter_source(k) is ParameterSource.DEFAULT}


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
    """Draw a video: visible masks, amodal ground truth, models' predictions (--model) with errors and mIoU.

    Columns are numbered frames (a GIF counts them); object k has one colour in every row.
    Where the shard has amodal ground truth, each prediction's false-positive and false-negative
    pixels have their own colours and its frame-level mIoU on this video (full and occluded)
    stands beside it; the legend says what tint, outline and colours mean.
    """
    from amodalkit.evaluation.evaluate import predict_binary
    from amodalkit.evaluation.per_video import video_scores
    from amodalkit.io.paths import check_writable, refuse_overwrite
    from amodalkit.io.shard_read import ShardReader
    from amodalkit.models.registry import get_model_spec
    from amodalkit.tables.report import score_note
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
        made_by = r.provenance.get("prediction")
    preds = {}
    if video.pred_amodal is not None:
        method = made_by.get("method") if isinstance(made_by, dict) else None
        label = method.get("method") if isinstance(method, dict) else None
        preds[f"{label or 'prediction'} (stored)"] = (video.pred_amodal > 127) | video.visible_masks()
    for name in names:
        m = _model_method(name, checkpoint if name in needing else None, "auto", quiet=True)
        preds[name.removeprefix("zoo:")] = predict_binary(m, video)
    amodal = video.amodal if video.amodal_annotated.any() else None
    notes = {} if amodal is None else {name: score_note(video_scores(video, p)) for name, p in preds.items()}
    save_video_picture(out, video.frames, video.visible_masks(), amodal, preds, n_frames, scale, notes=notes,
                       annotated=video.amodal_annotated, title=f"{Path(shard).name}  video {video_index} "
                       f"({video.name}), {video.num_frames} frames")
    click.echo(f"wrote {out}")


@cli.command()
@click.option("--model", required=True, help=f"What predicts: {MODEL_HELP}; trained ones need --checkpoint.")
@click.option("--checkpoint", default=None, help="Checkpoint (.safetensors) of the trained --model.")
@click.option("--data", "data", required=True, multiple=True,
              help="Shards (with or without amodal ground truth): file, folder or glob (repeatable).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder.")
@click.option("--format", "fmt", default="png", show_default=True,
              type=click.Choice(["png", "coco", "shard"]),
              help="png: an 8-bit probability PNG per object and frame; coco: a KINS-style COCO JSON with "
                   "scores; shard: copies of the shards with a pred_amodal field (for show).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] (trained models).")
@click.option("--k", "k", type=int, default=None, help="--model temporal: window of k frames.")
@click.option("--bidirectional", is_flag=True, help="--model temporal: also aggregate backwards in time.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(model: str, checkpoint: str | None, data: tuple[str, ...], out: Path, fmt: str, device: str,
            k: int | None, bidirectional: bool, quiet: bool) -> None:
    """Write a model's amodal predictions for shards (no ground truth needed); re-runs skip done videos."""
    from amodalkit.evaluation.predict import predict_shards
    from amodalkit.io.paths import refuse_overwrite
    from amodalkit.io.shards import expand_shard_paths

    paths = expand_shard_paths(data)
    refuse_overwrite({"--out": out}, [*paths, checkpoint], output_folders=True)
    _hold(out)
    m = _model_method(model, checkpoint, device, quiet, {"k": k, "bidirectional": bidirectional})
    counts = predict_shards(m, paths, out, fmt, quiet)
    click.echo(f"{counts['videos']} videos, {counts['object_frames']} object-frames predicted into {out}"
               + (f" ({counts['file']})" if "file" in counts else ""))


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

