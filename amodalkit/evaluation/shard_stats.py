"""What a shard holds, in numbers: the data behind ``amodalkit info``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amodalkit.io.remote import RemoteShard, as_shard_location
from amodalkit.io.shard_read import ShardReader
from amodalkit.ops.masks import never_visible_pixels, occlusion_rates


def summarize_shard(path: str | Path | RemoteShard) -> dict:
    """Counts, sizes, occlusion and visibility statistics of one (validated) shard, local or at a URL."""
    path = as_shard_location(path)
    with ShardReader(path) as r:
        frames = objects = 0
        rates: list[np.ndarray] = []
        never = total = 0
        backends: set[str] = set()
        sizes: set[tuple[int, int]] = set()
        with_flow = single_frame = 0
        for i in range(len(r)):
            meta = r.meta(i)
            frames += meta["num_frames"]
            objects += meta["num_objects"]
            sizes.add(tuple(meta["size"]))
            if meta["num_frames"] < 2:
                single_frame += 1
            elif "flow" in meta["fields"]:
                with_flow += 1
                backends.add(meta["flow_backend"] or "unknown")
            v = r.read_video(i, ("amodal", "amodal_annotated"))
            visible = v.visible_masks()
            rate = occlusion_rates(v.amodal, visible)[v.amodal_annotated]
            rates.append(rate[~np.isnan(rate)])
            for k in range(v.num_objects):
                ann = v.amodal_annotated[k]
                n, tot = never_visible_pixels(v.amodal[k][ann], visible[k][ann])
                never += n
                total += tot
        all_rates = np.concatenate(rates) if rates else np.zeros(0)
        return {
            "path": str(path),
            "schema_version": r.schema_version,
            "videos": len(r),
            "frames": frames,
            "objects": objects,
            "frame_sizes": sorted(f"{h}x{w}" for h, w in sizes),
            "bytes": path.size() if isinstance(path, RemoteShard) else path.stat().st_size,
            "annotated_object_frames": int(all_rates.size),
            "mean_occlusion_rate": float(all_rates.mean()) if all_rates.size else float("nan"),
            "never_visible_fraction": never / total if total else float("nan"),
            "videos_with_flow": with_flow,
            "videos_without_frame_pairs": single_frame,
            "flow_backends": sorted(backends),
            "flow_settings": r.provenance.get("flow") or {},
        }


def format_summary(s: dict) -> str:
    """One block of text per shard for the terminal."""
    flow = f"{s['videos_with_flow']}/{s['videos']} videos ({', '.join(s['flow_backends']) or 'none'})"
    if s.get("videos_without_frame_pairs"):
        flow += f", {s['videos_without_frame_pairs']} single-frame (no pairs to hold flow)"
    if "exact" in s["flow_backends"]:
        flow += "; exact = the generator's drawn motion (an upper bound, not the paper's protocol)"
    lines = [
        f"{s['path']}",
        f"  schema version        {s['schema_version']}",
        f"  videos / frames       {s['videos']} / {s['frames']}   frame size {', '.join(s['frame_sizes'])}",
        f"  objects               {s['objects']}   annotated object-frames {s['annotated_object_frames']}",
        f"  size on disk          {s['bytes'] / 1e6:.2f} MB "
        f"({s['bytes'] / max(s['videos'], 1) / 1e3:.1f} kB/video)",
        f"  mean occlusion rate   {s['mean_occlusion_rate']:.4f}",
        f"  never-visible amodal  {s['never_visible_fraction']:.4f} of amodal pixels",
        f"  flow                  {flow}",
    ]
    if s.get("flow_settings"):
        settings = ", ".join(f"{k}={v}" for k, v in sorted(s["flow_settings"].items()) if k != "backend")
        lines.append(f"  flow settings         {settings}")
    return "\n".join(lines)
