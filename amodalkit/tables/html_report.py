"""``amodalkit report``: one self-contained HTML page of a benchmark's results or an ``evaluate --json`` file.

What it reads::

    RESULTS_DIR/results.json   written by `amodalkit benchmark` (RESULTS_DIR/figure.png is shown too)
    FILE.json                  such a results.json, or the file of `amodalkit evaluate --json FILE.json`

The page holds the results tables with the command behind every number, the per-video score
distribution of each method (from results.json's ``figure.per_video``, which the benchmark
writes for the rows of its figure; other rows are re-scored here when their shards are present
and, by default, only when that is cheap: rule-based methods), and the worst videos as
side-by-side animations when their shards are present. CSS, the script and every image are
inlined (images as data: URIs): the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import inspect
import json
import math
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path
from amodalkit.models.base import AmodalMethod
from amodalkit.tables.report import candidate_videos, per_video_scores, score_note

METRICS = ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "object_miou_occluded")
RESCORE = ("none", "cheap", "all")
#: methods side by side in an animation of a worst video (the first rows with per-video scores)
ANIMATION_ROWS = 6
CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1b1b1b;padding:0 16px}
table{border-collapse:collapse;margin:8px 0 18px}
th,td{border:1px solid #c9d1dc;padding:4px 9px;text-align:right}
th{background:#e4ecf7;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
code,pre{font:13px ui-monospace,monospace;background:#f3f5f8;border-radius:3px}
pre{padding:6px 8px;white-space:pre-wrap;word-break:break-all;margin:2px 0}.note{color:#555}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}figure{margin:10px 0 26px}
svg text{font:12px system-ui}"""
SCRIPT = """document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.dataset.dir === "asc" ? -1 : 1;
      th.dataset.dir = dir > 0 ? "asc" : "desc";
      function key(row) { var t = row.cells[col].textContent, x = parseFloat(t); return isNaN(x) ? t : x; }
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * dir; });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.body.dataset.ready = "1";"""


@dataclass
class ReportRow:
    """One method of the page: its numbers, the commands behind them and how to rebuild it (None: cannot)."""

    name: str
    label: str
    metrics: dict
    commands: dict[str, str]
    ablation: bool = False
    paper: dict | None = None
    cost: dict | None = None
    build: dict | None = None
    shards: list[str] = field(default_factory=list)


def load_results(path: Path) -> tuple[Path, dict]:
    """The results file of `path` (a benchmark results folder or a JSON file) and its data."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise AmodalkitError("no such results file (give a benchmark results folder, its results.json or "
                             "an `amodalkit evaluate --json` file)", file)
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AmodalkitError(f"unreadable results JSON ({exc})", file) from exc
    if not isinstance(data, dict) or not (isinstance(data.get("methods"), dict) or "frame_miou_full" in data):
        raise AmodalkitError("not a results file of `amodalkit benchmark` or `amodalkit evaluate --json`",
                             file)
    return file, data


def _evaluate_command(d: dict, tta: bool) -> str:
    """The ``amodalkit evaluate`` command line of an evaluate result (rebuilt from its settings)."""
    parts = ["amodalkit", "evaluate", "--model", str(d["method"])]
    if d.get("checkpoint"):
        parts += ["--checkpoint", str(d["checkpoint"])]
    if d.get("k") is not None:
        parts += ["--k", str(d["k"])]
    if d.get("bidirectional"):
        parts.append("--bidirectional")
    if d.get("occlusion_range"):
        parts += ["--occlusion-range", *map(str, d["occlusion_range"])]
    if d.get("protocol"):
        parts += ["--protocol", str(d["protocol"])]
    if tta:
        parts.append("--tta")
    return shlex.join([*parts, "--data", str(d.get("data", "?"))])


def _evaluate_label(d: dict) -> str:
    """`temporal k=5 bi-directional`, `savos (best.safetensors)`: the method of an evaluate result."""
    extra = [f"k={d['k']}"] if d.get("k") is not None else []
    extra += ["bi-directional"] if d.get("bidirectional") else []
    extra += [f"({Path(str(d['checkpoint'])).name})"] if d.get("checkpoint") else []
    return " ".join([str(d["method"]), *extra])


def result_rows(data: dict) -> list[ReportRow]:
    """The rows of a benchmark results.json or of an evaluate JSON."""
    rows = []
    try:
        if isinstance(data.get("methods"), dict):
            for name, e in data["methods"].items():
                training = e.get("training") or {}
                build = {"method": e["method"], "options": e.get("options") or {}}
                if training:
                    build = {"method": e["method"], "checkpoint": training["checkpoint"]}
                if e.get("tta"):
                    build = None
                cost = {"epochs": training.get("epochs_run"), "stopped": training.get("stopped"),
                        **{k: e.get(k) for k in ("train_seconds", "eval_seconds", "object_frames_per_s")}}
                rows.append(ReportRow(name, e.get("label", name), e["metrics"], dict(e.get("commands") or {}),
                                      bool(e.get("ablation")), e.get("paper"), cost, build,
                                      list((e.get("evaluation") or {}).get("shards") or [])))
            return rows
        for d, tta in [(data, False), *([(data["tta"], True)] if isinstance(data.get("tta"), dict) else [])]:
            build = None
            if not tta and not d.get("occlusion_range"):
                build = ({"method": d["method"], "checkpoint": d["checkpoint"], "window": d.get("window")}
                         if d.get("checkpoint") else {"method": d["method"], "options": d})
            name = d["method"] + (" + TTA" if tta else "")
            rows.append(ReportRow(name, _evaluate_label(data) + (" + TTA" if tta else ""),
                                  {k: d[k] for k in METRICS},
                                  {"evaluate": _evaluate_command(data, tta)}, build=build,
                                  shards=list(data.get("shards") or [])))
    except (KeyError, TypeError, AttributeError) as exc:
        raise AmodalkitError(f"the results JSON lacks a field amodalkit writes ({exc})") from exc
    return rows


def rebuild_method(row: ReportRow, device: str) -> AmodalMethod | None:
    """`row`'s method again: rule-based from its options, trained from its checkpoint (None: file gone)."""
    from amodalkit.models.registry import build_method as build
    from amodalkit.models.registry import get_model_spec, method_from_checkpoint

    spec = row.build or {}
    if "checkpoint" in spec:
        if not Path(spec["checkpoint"]).is_file():
            return None
        from amodalkit.device import resolve_device

        method = method_from_checkpoint(spec["checkpoint"], device=str(resolve_device(device)))
        if spec.get("window") is not None and hasattr(method, "window"):
            method.window = spec["window"]
        return method
    factory = get_model_spec(spec["method"]).method
    accepted = inspect.signature(factory).parameters
    return build(spec["method"], **{k: v for k, v in spec["options"].items() if k in accepted})


def gather_per_video(data: dict, rows: list[ReportRow], rescore: str, device: str) -> tuple[dict, list[str]]:
    """{"videos": [[shard, index, name]], "scores": {row: {"full", "occluded"}}}, and notes for the page."""
    per = (data.get("figure") or {}).get("per_video") or {}
    videos = [tuple(v) for v in per.get("videos") or []]
    scores = dict(per.get("scores") or {})
    notes = []
    shards = next((r.shards for r in rows if r.shards), [])
    present = bool(shards) and all(Path(s).is_file() for s in shards)
    missing = [r for r in rows if r.name not in scores]
    done: list[str] = []
    protocol = data.get("protocol") or data.get("config", {}).get("protocol", "official")
    if missing and rescore != "none" and present:
        videos = videos or candidate_videos([Path(s) for s in shards])
        for r in missing:
            if r.build is not None and (rescore == "all" or "checkpoint" not in r.build):
                method = rebuild_method(r, device)
                if method is not None:
                    scores[r.name] = per_video_scores(method, videos, protocol)
                    done.append(r.name)
    if done:
        notes.append(f"re-scored here on {len(videos)} videos (not in the results file): {', '.join(done)}")
    left = [r.name for r in rows if r.name not in scores]
    if left:
        why = ("its shards are not here" if not present else
               "re-scoring it is not cheap (rerun with --rescore all)" if rescore != "all" else
               "its checkpoint is gone or it is test-time adapted / occlusion-filtered")
        notes.append(f"no per-video scores for {', '.join(left)}: the results file does not hold them and "
                     f"{why}")
    return {"videos": videos, "scores": {r.name: scores[r.name] for r in rows if r.name in scores}}, notes


def _mean_over_methods(per: dict, key: str) -> np.ndarray:
    """Per video, the mean of the methods' scores `key` (NaN where none has one)."""
    m = np.array([[np.nan if v is None else v for v in s[key]] for s in per["scores"].values()], float)
    known = ~np.isnan(m)
    return np.where(known, m, 0.0).sum(axis=0) / np.where(known.any(axis=0), known.sum(axis=0), np.nan)


def worst_videos(per: dict, n: int) -> list[int]:
    """Positions of the `n` videos with the lowest occluded mIoU averaged over the methods (full if none)."""
    if not per["scores"] or n < 1:
        return []
    occ, full = _mean_over_methods(per, "occluded"), _mean_over_methods(per, "full")
    key = np.where(np.isnan(occ), np.where(np.isnan(full), 3.0, 1.0 + full), occ)
    return [int(i) for i in np.argsort(key, kind="stable")[:n]]


def _num(value: float | None, digits: int = 4, short: bool = True) -> str:
    """`value` with `digits` decimals (`short`: ".9765" for 0.9765), "—" when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    text = f"{value:.{digits}f}"
    return text[1:] if short and text.startswith("0.") else text


def _data_uri(path: Path, kind: str) -> str:
    """The image file at `path` as a data: URI."""
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def animations(per: dict, rows: list[ReportRow], worst: list[int], device: str,
               first: list[str]) -> tuple[list[str], list[str]]:
    """HTML figures of the worst videos (inlined GIFs; methods side by side, `first` first), and notes."""
    from amodalkit.evaluation.evaluate import predict_binary
    from amodalkit.evaluation.per_video import video_scores
    from amodalkit.io.shard_read import ShardReader
    from amodalkit.viz import save_video_picture

    by_name = {r.name: r for r in rows}
    names = [n for n in first if n in per["scores"]] + [n for n in per["scores"] if n not in first]
    methods: dict[str, AmodalMethod] = {}
    skipped = []
    for name in names[:ANIMATION_ROWS]:
        m = rebuild_method(by_name[name], device) if by_name[name].build else None
        if m is None:
            skipped.append(name)
        else:
            methods[name] = m
    notes = [f"not in the animations: {', '.join(skipped)} (no method to rebuild)"] if skipped else []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in worst:
            shard, index, name = per["videos"][i]
            if not Path(shard).is_file():
                notes.append(f"no animation of video {name}: {shard} is not here")
                continue
            with ShardReader(shard) as r:
                video = r.read_video(int(index))
            preds = {row: predict_binary(m, video) for row, m in methods.items()}
            scale = max(1, min(4, 200 // max(video.size)))
            gif = Path(tmp) / f"{i}.gif"
            save_video_picture(gif, video.frames, video.visible_masks(), video.amodal, preds, scale=scale,
                               notes={k: score_note(video_scores(video, p)) for k, p in preds.items()},
                               annotated=video.amodal_annotated, title=f"{Path(shard).name} video {index}")
            out.append(f'<figure><img alt="video {html.escape(name)}" src="{_data_uri(gif, "gif")}">'
                       f"<figcaption>{html.escape(Path(shard).name)} video {index} ({html.escape(name)})"
                       "</figcaption></figure>")
    return out, notes


def distribution_svg(per: dict, key: str, labels: dict[str, str]) -> str:
    """An inline SVG: per method one line of dots (one per video), its quartile box and median."""
    values = {name: np.array([v for v in s[key] if v is not None], float)
              for name, s in per["scores"].items()}
    every = np.concatenate([v for v in values.values() if v.size] or [np.zeros(1)])
    step = next((t for t in (0.1, 0.05, 0.02, 0.01) if 1 - every.min() >= 4 * t), 0.005)
    lo = max(0.0, min(1 - step, math.floor(float(every.min()) / step) * step))
    left, width, row_h, right = 300, 560, 28, 140
    height = row_h * len(values) + 30

    def x(v: float) -> float:
        return left + (v - lo) / (1 - lo) * width

    parts = [f'<svg role="img" width="{left + width + right}" height="{height}" '
             f'viewBox="0 0 {left + width + right} {height}">']
    for j in range(round((1 - lo) / step) + 1):
        tick = lo + j * step
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="0" y2="{height - 22}" '
                     f'stroke="#e3e3e3"/><text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle">'
                     f'{_num(tick, 2)}</text>')
    for r, (name, v) in enumerate(values.items()):
        y = r * row_h + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{html.escape(labels[name])}</text>')
        if not v.size:
            parts.append(f'<text x="{left}" y="{y + 4:.1f}">no scored videos</text>')
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        parts.append(f'<rect x="{x(q1):.1f}" y="{y - 9:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" height="18" '
                     f'fill="#dbe7f6" stroke="#5b7fb0"/><line x1="{x(med):.1f}" x2="{x(med):.1f}" '
                     f'y1="{y - 9:.1f}" y2="{y + 9:.1f}" stroke="#1d3f73" stroke-width="2"/>')
        parts += [f'<circle cx="{x(float(s)):.1f}" cy="{y + ((k * 7919) % 13 - 6):.1f}" r="2.3" '
                  'fill="#c0392b" fill-opacity="0.55"/>' for k, s in enumerate(v)]
        parts.append(f'<text x="{left + width + 8}" y="{y + 4:.1f}">n={v.size}, '
                     f'median {_num(float(med), 3)}</text>')
    return "".join(parts) + "</svg>"


def _table(headers: list[str], body: list[list[str]]) -> str:
    """A sortable HTML table; `body` cells are HTML already."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _metric_rows(rows: list[ReportRow]) -> list[list[str]]:
    """Cells of the mIoU table: the four metrics, the paper's numbers, a link to the commands."""
    out = []
    for r in rows:
        paper = r.paper or {}
        cells = [_num(r.metrics.get(k)) for k in METRICS]
        cells += [_num(paper.get("full")), _num(paper.get("occluded"))]
        out.append([html.escape(r.label), *cells, f'<a href="#cmd-{html.escape(r.name)}">how</a>'])
    return out


def _cost_rows(rows: list[ReportRow]) -> list[list[str]]:
    """Cells of the cost table: epochs, training and evaluation seconds, inference speed."""
    out = []
    for r in rows:
        c = r.cost or {}
        epochs = "—" if c.get("epochs") is None else str(c["epochs"])
        if c.get("stopped"):
            epochs += f" ({c['stopped']})"
        fps = c.get("object_frames_per_s")
        out.append([html.escape(r.label), epochs, _num(c.get("train_seconds"), 1, False),
                    _num(c.get("eval_seconds"), 1, False), "—" if fps is None else f"{fps:.0f}"])
    return out


def render_page(source: Path, data: dict, rows: list[ReportRow], per: dict, notes: list[str],
                gifs: list[str], worst: list[int], figure: Path | None) -> str:
    """The whole HTML page."""
    esc = html.escape
    labels = {r.name: r.label for r in rows}
    first = data["methods"][rows[0].name].get("evaluation", {}) if "methods" in data else data
    intro = (f"<p>Source: <code>{esc(str(source))}</code>. Data: <code>{esc(str(first.get('data', '?')))}"
             "</code>, "
             f"{first.get('n_videos', '?')} videos, {first.get('n_object_frames', '?')} scored object-frames "
             f"({first.get('n_occluded_object_frames', '?')} with hidden pixels).</p>")
    if data.get("command"):
        intro += f"<p>Produced by</p><pre>{esc(data['command'])}</pre>"
    headers = ["method", "frame Full", "frame Occluded", "object Full", "object Occluded", "paper Full",
               "paper Occluded", "commands"]
    title = source.parent.name if source.name == "results.json" else source.stem
    body = [f"<h1>amodalkit report: {esc(title)}</h1>", intro, "<h2>Amodal mean IoU</h2>",
            "<p class='note'>Frame level: mean over the objects of each frame, then over frames. Occluded: "
            "IoU outside the visible mask, over object-frames with hidden ground truth. Click a column to "
            "sort.</p>",
            _table(headers, _metric_rows([r for r in rows if not r.ablation]))]
    if any(r.ablation for r in rows):
        body += ["<h2>SaVos ablations</h2><p class='note'>The paper column is FISHBOWL (Table 2).</p>",
                 _table(headers, _metric_rows([r for r in rows if r.ablation]))]
    if any(r.cost for r in rows):
        body += ["<h2>Cost</h2>", _table(["method", "epochs", "train (s)", "evaluate (s)", "object-frames/s"],
                                         _cost_rows(rows))]
    body.append("<h2>Per-video scores</h2>")
    if per["scores"]:
        body += [f"<p class='note'>Frame-level mIoU of each method on each of {len(per['videos'])} test "
                 "videos (one dot per video; box: quartiles, bar: median).</p><h3>Full</h3>",
                 distribution_svg(per, "full", labels), "<h3>Occluded</h3>",
                 distribution_svg(per, "occluded", labels)]
    body += [f"<p class='note'>{esc(n)}</p>" for n in notes]
    if worst:
        body.append("<h2>Worst videos</h2><p class='note'>Lowest occluded mIoU, averaged over the methods."
                    "</p>")
        table = []
        for i in worst:
            shard, index, name = per["videos"][i]
            table.append([esc(f"{Path(shard).name} #{index} ({name})"),
                          *[f"{_num(s['full'][i], 3)} / {_num(s['occluded'][i], 3)}"
                            for s in per["scores"].values()]])
        body += [_table(["video", *[f"{labels[n]} (full / occl.)" for n in per["scores"]]], table), *gifs]
    if figure is not None:
        body += ["<h2>Benchmark figure</h2>", f'<img alt="figure" src="{_data_uri(figure, "png")}">']
    body.append("<h2>Commands behind each number</h2>")
    for r in rows:
        cmds = "".join(f"<div>{esc(step)}:</div><pre>{esc(cmd)}</pre>" for step, cmd in r.commands.items())
        body.append(f'<h3 id="cmd-{esc(r.name)}">{esc(r.label)}</h3>{cmds or "<p>not recorded</p>"}')
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>amodalkit report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n")


def write_report(results: Path, out: Path, rescore: str = "cheap", worst: int = 3,
                 device: str = "auto") -> dict:
    """Write the HTML page of `results` (folder or JSON file) to `out`; return what it holds."""
    if rescore not in RESCORE or worst < 0:
        raise AmodalkitError(f"--rescore takes one of {', '.join(RESCORE)} and --worst a count >= 0")
    source, data = load_results(Path(results))
    rows = result_rows(data)
    if not rows:
        raise AmodalkitError("the results file holds no method", source)
    per, notes = gather_per_video(data, rows, rescore, device)
    picked = worst_videos(per, worst)
    first = list((data.get("figure") or {}).get("rows") or [])
    gifs, more = animations(per, rows, picked, device, first) if picked else ([], [])
    figure = source.parent / "figure.png" if "methods" in data else None
    page = render_page(source, data, rows, per, notes + more, gifs, picked,
                       figure if figure is not None and figure.is_file() else None)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"rows": len(rows), "per_video_rows": list(per["scores"]), "worst": len(picked),
            "animations": len(gifs), "bytes": len(page.encode())}
