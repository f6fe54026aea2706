"""A benchmark's figure and its markdown tables (Table 1 and Table 2 layouts)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from amodalkit.evaluation.evaluate import predict_binary
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.savos.config import MODEL_NAME as SAVOS
from amodalkit.tables.config import BenchmarkConfig
from amodalkit.tables.plan import PAPER_FISHBOWL_ABLATIONS, Row, build_row_method


def pick_figure_video(test: list[Path]) -> tuple[Path, int]:
    """The video of the first test shard with the most hidden amodal pixels (shard, index)."""
    best = (-1, 0)
    with ShardReader(test[0]) as r:
        for i in range(len(r)):
            v = r.read_video(i, ("amodal", "amodal_annotated"))
            hidden = int((v.amodal & ~v.visible_masks() & v.amodal_annotated[:, :, None, None]).sum())
            best = max(best, (hidden, -i))
    return test[0], -best[1]


def write_figure(cfg: BenchmarkConfig, rows: list[Row], entries: dict[str, dict], test: list[Path]) -> dict:
    """figure.png: rows visible / ground truth / each method, columns the same frames of one test video."""
    from amodalkit.viz import save_video_picture

    shard, index = pick_figure_video(test)
    with ShardReader(shard) as r:
        video = r.read_video(index)
    preds = {}
    for row in tqdm(rows, desc="figure", unit="method", leave=False, disable=cfg.quiet):
        training = entries[row.name]["training"]
        method = build_row_method(cfg, row, None if training is None else training["checkpoint"])
        preds[row.name] = predict_binary(method, video)
    h, w = video.size
    scale = max(1, min(4, 200 // max(h, w)))
    path = Path(cfg.out) / "figure.png"
    save_video_picture(path, video.frames, video.visible_masks(), video.amodal, preds, cfg.figure_frames,
                       scale)
    return {"path": str(path), "shard": str(shard), "video_index": index, "video": video.name,
            "frames": cfg.figure_frames}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value:.4f}"
    return text[1:] if text.startswith("0.") else text


def _metric_table(entries: list[dict], paper_title: str) -> list[str]:
    lines = [f"| method | frame Full | frame Occluded | object Full | object Occluded | {paper_title} Full "
             f"| {paper_title} Occluded |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        m, p = e["metrics"], e["paper"] or {}
        lines.append(f"| {e['label']} | {_fmt(m['frame_miou_full'])} | {_fmt(m['frame_miou_occluded'])} "
                     f"| {_fmt(m['object_miou_full'])} | {_fmt(m['object_miou_occluded'])} "
                     f"| {_fmt(p.get('full'))} | {_fmt(p.get('occluded'))} |")
    return lines


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_results_md(results: dict) -> str:
    """results.md: Table 1 layout (frame- and object-level, paper column), then the cost of each row."""
    cfg = results["config"]
    entries = [e for e in results["methods"].values() if not e["ablation"]]
    first = entries[0]["evaluation"]
    lines = ["# Benchmark: amodal mean IoU on the test split", "",
             f"Data: `{cfg['data']}` ({first['n_videos']} test videos, {first['n_object_frames']} scored "
             f"object-frames, {first['n_occluded_object_frames']} with hidden pixels). Seed {cfg['seed']}.",
             f"Produced by `{results['command']}` (every setting in `config.json`).", "",
             "Frame-level mIoU is the paper's headline metric (mean over the objects of each frame, then "
             "over frames); object-level is the mean over object-frames. Occluded: IoU restricted to the "
             "pixels outside the visible mask, over object-frames with hidden ground truth. The paper "
             "column is Table 1's Chewing Gum result in the SaVos paper.", ""]
    lines += _metric_table(entries, "paper (Chewing Gum)")
    lines += ["", "| method | epochs | train (s) | evaluate (s) | inference object-frames/s |",
              "|---|---|---|---|---|"]
    for e in entries:
        t = e["training"]
        epochs = "—"
        if t is not None:
            epochs = f"{t['epochs_run']}" + (f" ({t['stopped']})" if t["stopped"] else "")
        fps = "—" if e["object_frames_per_s"] is None else f"{e['object_frames_per_s']:.0f}"
        train = "(shared with SaVos)" if e["tta"] else _seconds(e["train_seconds"])
        lines.append(f"| {e['label']} | {epochs} | {train} | {_seconds(e['eval_seconds'])} | {fps} |")
    lines += ["", "![methods side by side](figure.png)", ""]
    return "\n".join(lines)


def format_ablations_md(results: dict) -> str:
    """ablations.md: the paper's Table 2 layout, the FISHBOWL numbers for reference."""
    rows = [results["methods"][SAVOS]] + [e for e in results["methods"].values() if e["ablation"]]
    ref_full, ref_occluded = PAPER_FISHBOWL_ABLATIONS[SAVOS]
    full = {**rows[0], "label": "SaVos (full model)", "paper": {"full": ref_full, "occluded": ref_occluded}}
    lines = ["# SaVos ablations (the paper's Table 2)", "",
             f"Same data, seed and training budget as `savos`; produced by `{results['command']}`. "
             "The paper's numbers are FISHBOWL (Table 2), so compare the ordering, not the values.", ""]
    lines += _metric_table([full, *rows[1:]], "paper (FISHBOWL)")
    return "\n".join(lines) + "\n"
