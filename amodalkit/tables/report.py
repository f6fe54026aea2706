"""A benchmark's figure and its markdown tables (Table 1 and Table 2 layouts)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.evaluation.evaluate import GT_FIELDS, predict_binaries, predict_binary
from amodalkit.evaluation.per_video import video_scores
from amodalkit.evaluation.protocols import DEFAULT_PROTOCOL
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.savos.config import MODEL_NAME as SAVOS
from amodalkit.tables.config import BenchmarkConfig
from amodalkit.tables.plan import PAPER_FISHBOWL_ABLATIONS, Row, build_row_method

#: test videos the figure shows: those where the methods' occluded mIoU differs most
FIGURE_VIDEOS = 2
#: test videos scored per figure row to find them (the first ones of the test shards)
FIGURE_MAX_VIDEOS = 1000


def _short(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text


def score_note(scores: dict[str, float | None]) -> str:
    """The text beside a prediction: its frame-level mIoU on the video, full and occluded."""
    return f"mIoU {_short(scores['full'])}, occluded {_short(scores['occluded'])}"


def candidate_videos(test: list[Path], limit: int = FIGURE_MAX_VIDEOS) -> list[tuple[str, int, str]]:
    """(shard, index, name) of the first `limit` test videos, in shard order."""
    out = []
    for shard in test:
        with ShardReader(shard) as r:
            out += [(str(shard), i, name) for i, name in enumerate(r.video_names)]
    return out[:limit]


def per_video_scores(method: AmodalMethod, videos: list[tuple[str, int, str]],
                     protocol: str = DEFAULT_PROTOCOL) -> dict[str, list]:
    """{"full": [...], "occluded": [...]}: `method`'s frame-level mIoU on each video (None: unscored)."""
    fields = (*method.fields, *GT_FIELDS)
    out: dict[str, list] = {"full": [], "occluded": []}
    batch: list[Video] = []

    def flush() -> None:
        for video, pred in zip(batch, predict_binaries(method, batch)):
            for key, value in video_scores(video, pred, protocol).items():
                out[key].append(round(value, 6) if math.isfinite(value) else None)
        batch.clear()

    readers: dict[str, ShardReader] = {}
    try:
        for shard, index, _ in videos:
            reader = readers.setdefault(shard, ShardReader(shard))
            batch.append(reader.read_video(index, fields))
            if len(batch) >= max(1, method.videos_per_batch):
                flush()
        if batch:
            flush()
    finally:
        for reader in readers.values():
            reader.close()
    return out


def figure_rows(rows: list[Row], entries: dict[str, dict]) -> list[Row]:
    """One row per method family: each model's table row with the best occluded mIoU (no ablation, no TTA)."""
    best: dict[str, Row] = {}

    def occluded(row: Row) -> float:
        value = entries[row.name]["metrics"]["frame_miou_occluded"]
        return -1.0 if value is None else value

    for row in rows:
        if row.ablation is None and not row.tta and (row.method not in best or
                                                     occluded(row) > occluded(best[row.method])):
            best[row.method] = row
    return list(best.values())


def pick_figure_videos(scores: dict[str, dict[str, list]], n: int = FIGURE_VIDEOS) -> list[tuple[int, float]]:
    """(position, spread) of the `n` videos whose occluded mIoU differs most between the rows of `scores`.

    Ties (e.g. one row only) go to the video with the lowest mean occluded mIoU, the hardest one;
    videos without occluded object-frames come last.
    """
    occ = np.array([[np.nan if v is None else v for v in s["occluded"]] for s in scores.values()], float)
    known = ~np.isnan(occ)
    count = known.sum(axis=0)
    spread = np.where(count > 0, np.where(known, occ, -np.inf).max(axis=0)
                      - np.where(known, occ, np.inf).min(axis=0), -1.0)
    mean = np.where(count > 0, np.where(known, occ, 0.0).sum(axis=0) / np.maximum(count, 1), 2.0)
    order = sorted(range(occ.shape[1]), key=lambda i: (-spread[i], mean[i], i))
    return [(i, float(max(spread[i], 0.0))) for i in order[:n]]


def write_figure(cfg: BenchmarkConfig, rows: list[Row], entries: dict[str, dict], test: list[Path]) -> dict:
    """figure.png: the test videos where the method families differ most, with errors and per-video mIoU.

    Each family's row is scored on every test video (up to :data:`FIGURE_MAX_VIDEOS`); the
    scores are kept in the returned record ("per_video") for ``amodalkit report``.
    """
    from amodalkit.viz import VideoView, save_views

    shown = figure_rows(rows, entries)
    videos = candidate_videos(test)
    methods, scores = {}, {}
    for row in tqdm(shown, desc="figure", unit="method", leave=False, disable=cfg.quiet):
        training = entries[row.name]["training"]
        methods[row.name] = build_row_method(cfg, row, None if training is None else training["checkpoint"])
        scores[row.name] = per_video_scores(methods[row.name], videos, cfg.protocol)
    picked = pick_figure_videos(scores)
    views, records = [], []
    for i, spread in picked:
        shard, index, name = videos[i]
        with ShardReader(shard) as r:
            video = r.read_video(index)
        preds = {row: predict_binary(m, video) for row, m in methods.items()}
        notes = {row: score_note({k: s[k][i] for k in ("full", "occluded")}) for row, s in scores.items()}
        views.append(VideoView(video.frames, video.visible_masks(), video.amodal, preds, notes,
                               video.amodal_annotated, f"{Path(shard).name} video {index} ({name}): occluded "
                               f"mIoU differs by {spread:.3f} between the methods"))
        records.append({"shard": shard, "video_index": index, "video": name, "occluded_spread": spread})
    h, w = views[0].frames.shape[1:3]
    scale = max(1, min(4, 200 // max(h, w)))
    path = Path(cfg.out) / "figure.png"
    save_views(path, views, cfg.figure_frames, scale)
    return {"path": str(path), **records[0], "videos": records, "frames": cfg.figure_frames,
            "rows": list(methods), "per_video": {"videos": [list(v) for v in videos], "scores": scores}}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value:.4f}"
    return text[1:] if text.startswith("0.") else text


def _score(entry: dict, key: str) -> str:
    """A metric, as mean ± sd over the seeds when the row has several."""
    spread = (entry.get("spread") or {}).get(key)
    text = _fmt(entry["metrics"][key])
    return text if spread is None else f"{text} ± {_fmt(spread['sd'])}"


def _metric_table(entries: list[dict], paper_title: str) -> list[str]:
    lines = [f"| method | frame Full | frame Occluded | object Full | object Occluded | {paper_title} Full "
             f"| {paper_title} Occluded |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        p = e["paper"] or {}
        lines.append(f"| {e['label']} | {_score(e, 'frame_miou_full')} | {_score(e, 'frame_miou_occluded')} "
                     f"| {_score(e, 'object_miou_full')} | {_score(e, 'object_miou_occluded')} "
                     f"| {_fmt(p.get('full'))} | {_fmt(p.get('occluded'))} |")
    return lines


def spread_comparisons(entries: list[dict], key: str = "frame_miou_occluded") -> list[str]:
    """Which rows differ by more than their seed spread (|mean difference| > sd_a + sd_b), as lines.

    Rows without a spread (rule-based, or one seed) count with sd 0; only pairs where at
    least one row has several seeds are listed.
    """
    def sd(e: dict) -> float | None:
        return ((e.get("spread") or {}).get(key) or {}).get("sd")

    lines = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            if sd(a) is None and sd(b) is None:
                continue
            diff = a["metrics"][key] - b["metrics"][key]
            bound = (sd(a) or 0.0) + (sd(b) or 0.0)
            verdict = "larger than the spread" if abs(diff) > bound else "within the spread: no conclusion"
            lines.append(f"- {a['label']} vs {b['label']}: {diff:+.4f} (spread {bound:.4f}), {verdict}")
    return lines


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_results_md(results: dict) -> str:
    """results.md: Table 1 layout (frame- and object-level, paper column), then the cost of each row."""
    cfg = results["config"]
    entries = [e for e in results["methods"].values() if not e["ablation"]]
    first = entries[0]["evaluation"]
    seed_line = f"Seeds {', '.join(map(str, cfg['seeds']))}." if cfg.get("seeds") else f"Seed {cfg['seed']}."
    lines = ["# Benchmark: amodal mean IoU on the test split", "",
             f"Data: `{cfg['data']}` ({first['n_videos']} test videos, {first['n_object_frames']} scored "
             f"object-frames, {first['n_occluded_object_frames']} with hidden pixels). {seed_line}",
             f"Produced by `{results['command']}` (every setting in `config.json`).", "",
             f"Scoring protocol: `{first.get('protocol', 'official')}`; flow: `{first.get('flow') or 'none'}`"
             + (" (the generator's exact flow: an upper bound, not the paper's protocol)."
                if first.get("flow") == "exact" else "."), "",
             "Frame-level mIoU is the paper's headline metric (mean over the objects of each frame, then "
             "over frames); object-level is the mean over object-frames. Occluded: IoU restricted to the "
             "occluded region (`official`: the other objects' visible pixels, after the official paste "
             "rule; `strict`: the pixels outside the visible mask), over object-frames with hidden ground "
             "truth. The paper column is Table 1's Chewing Gum result in the SaVos paper.", ""]
    lines += _metric_table(entries, "paper (Chewing Gum)")
    compared = spread_comparisons(entries)
    if compared:
        seeds = ", ".join(map(str, cfg.get("seeds") or []))
        lines += ["", f"Trained rows: mean ± sample sd over seeds {seeds}. Frame-level occluded mIoU "
                  "differences against the sum of the two rows' sds:", "", *compared]
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
