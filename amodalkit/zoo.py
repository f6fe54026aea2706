"""Model zoo: registered pretrained weights with checksums, a per-user cache and measured metrics.

An entry of ``zoo/registry.json`` is data: name, model kind, file name, url, sha256, size,
the config that rebuilds the model, the data and command it was trained with, and the
metrics measured on it. Weights small enough to ship live beside the registry and resolve
without any network; others are downloaded once from the entry's url into the per-user cache
(to a temporary file, verified by sha256, then renamed). A cached file that verifies is never
fetched again.

zoo/ at the repository top is the source of truth. The build copies it into the package
(``amodalkit/_zoo/``, see setup.py), so an installed wheel reads it through ``importlib.resources``
from any directory; a clone or an editable install has no such copy and reads zoo/ itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import statistics
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from platformdirs import user_cache_dir
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import remove_stale_temps, temp_path_for
from amodalkit.io.paths import resolve_inside, safe_name

REPO_ZOO = Path(__file__).resolve().parents[1] / "zoo"
#: where the build puts its copy of zoo/ inside the package (setup.py's ZOO_PACKAGE_DIR)
PACKAGE_ZOO = "_zoo"
CHUNK = 1 << 16


@dataclass
class ZooEntry:
    """One registered model."""

    name: str
    model: str
    file: str
    sha256: str
    size: int
    url: str = ""
    config: dict = field(default_factory=dict)
    training_data: str = ""
    training_command: str = ""
    metrics: dict = field(default_factory=dict)
    notes: str = ""
    #: the recipe rerun with other seeds: {"shipped": seed, "data": ..., "per_seed": {seed: {metric: value}}}
    seeds: dict = field(default_factory=dict)
    #: the flow it was trained and scored with: "exact" (the generator's, an upper bound) or a backend name
    flow: str = ""

    def seed_spread(self) -> dict[str, dict]:
        """Mean and sample sd of each metric over the recipe's seeds (empty without seeds)."""
        per_seed = self.seeds.get("per_seed", {})
        keys = sorted({k for m in per_seed.values() for k in m})
        out = {}
        for k in keys:
            values = [m[k] for m in per_seed.values() if k in m]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out[k] = {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}
        return out


def zoo_dir() -> Path:
    """Folder of the shipped registry and weights: the installed package's data, else the clone's zoo/."""
    packaged = resources.files("amodalkit").joinpath(PACKAGE_ZOO)
    if not isinstance(packaged, Path):  # imported from a zip: no files to hash or open
        return REPO_ZOO
    if packaged.joinpath("registry.json").is_file() or not REPO_ZOO.joinpath("registry.json").is_file():
        return packaged  # with neither, errors name where an installed package keeps it
    return REPO_ZOO


def registry_path() -> Path:
    """The registry in use: $AMODALKIT_ZOO_REGISTRY, else the shipped registry.json (see `zoo_dir`)."""
    override = os.environ.get("AMODALKIT_ZOO_REGISTRY")
    return Path(override) if override else zoo_dir() / "registry.json"


def cache_dir() -> Path:
    """Per-user download cache: $AMODALKIT_CACHE, else the platform's user cache dir."""
    return Path(os.environ.get("AMODALKIT_CACHE", user_cache_dir("amodalkit"))) / "zoo"


def load_registry(path: str | Path | None = None) -> dict[str, ZooEntry]:
    """Read the registry: name -> entry. A malformed file is an error naming it."""
    path = Path(path) if path is not None else registry_path()
    try:
        raw = json.loads(path.read_text())
        entries = [ZooEntry(**e) for e in raw["models"]]
    except FileNotFoundError as exc:
        raise AmodalkitError("zoo registry not found (reinstall amodalkit, or point $AMODALKIT_ZOO_REGISTRY "
                             "at a registry.json)", path) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AmodalkitError(f"malformed zoo registry ({exc})", path) from exc
    for e in entries:
        _check_entry_types(e, path)
    return {e.name: e for e in entries}


ENTRY_TYPES = {"name": str, "model": str, "file": str, "sha256": str, "size": int, "url": str, "config": dict,
               "training_data": str, "training_command": str, "metrics": dict, "notes": str, "seeds": dict,
               "flow": str}


def _check_entry_types(entry: ZooEntry, path: Path) -> None:
    """Each registry field must hold its JSON type (``size`` a byte count, ``metrics`` numbers)."""
    for key, kind in ENTRY_TYPES.items():
        value = getattr(entry, key)
        if not isinstance(value, kind) or isinstance(value, bool):
            what = {str: "a string", int: "an integer", dict: "a JSON object"}[kind]
            raise AmodalkitError(f"malformed zoo registry: model {entry.name!r:.40} field {key!r} must be "
                                 f"{what}, got {value!r:.40}", path)
    if entry.size < 0:
        raise AmodalkitError(f"malformed zoo registry: model {entry.name!r} has a negative size", path)
    if entry.url and not entry.url.startswith(("https://", "http://")):
        raise AmodalkitError(f"malformed zoo registry: model {entry.name!r} url must start with https:// "
                             f"or http://, got {entry.url!r:.60}", path)
    for key, value in entry.metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise AmodalkitError(f"malformed zoo registry: model {entry.name!r} metric {key!r} must be a "
                                 f"number or text, got {value!r:.40}", path)
    per_seed = entry.seeds.get("per_seed", {})

    def numeric(metrics: object) -> bool:
        return isinstance(metrics, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())

    if not isinstance(per_seed, dict) or not all(numeric(m) for m in per_seed.values()):
        raise AmodalkitError(f"malformed zoo registry: model {entry.name!r} seeds.per_seed must map seeds "
                             "to numeric metrics", path)


def get_entry(name: str) -> ZooEntry:
    """The entry registered under `name`."""
    reg = load_registry()
    if name not in reg:
        raise AmodalkitError(f"no zoo model {name!r}; registered: {', '.join(sorted(reg)) or 'none'}")
    return reg[name]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, entry: ZooEntry, quiet: bool) -> None:
    tmp = temp_path_for(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent)
    h = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or entry.size or 0)
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.file, disable=quiet) as bar:
                while block := resp.read(CHUNK):
                    out.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
        if entry.size and got != entry.size:
            raise AmodalkitError(f"download of {url} stopped after {got} of {entry.size} bytes; "
                                 f"run the command again", dest)
        digest = h.hexdigest()
        if digest != entry.sha256:
            raise AmodalkitError(f"sha256 mismatch for {url}: expected {entry.sha256}, got {digest}; "
                                 f"the download was deleted", dest)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ConnectionError) as exc:
        raise AmodalkitError(f"download of {url} failed ({exc}); run the command again", dest) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def weights_paths(entry: ZooEntry) -> tuple[Path, Path]:
    """(shipped, cached) paths of an entry's weights, refused unless inside the zoo folder and the cache."""
    source = registry_path()
    safe_name(entry.file, f"zoo model {entry.name!r:.40} file", source)
    if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
        raise AmodalkitError(f"zoo model {entry.name!r:.40} sha256 must be 64 lowercase hex digits, got "
                             f"{entry.sha256!r:.80}", source)
    shipped = resolve_inside(source.parent, entry.file, source, f"zoo model {entry.name!r:.40} file")
    cached = resolve_inside(cache_dir(), f"{entry.sha256[:12]}-{entry.file}", source,
                            f"zoo model {entry.name!r:.40} file")
    return shipped, cached


def fetch_weights(name: str, quiet: bool = False) -> Path:
    """Local path of a zoo model's weights: shipped, cached, or downloaded and verified."""
    entry = get_entry(name)
    shipped, cached = weights_paths(entry)
    if shipped.is_file():
        digest = sha256_of(shipped)
        if digest != entry.sha256:
            raise AmodalkitError(f"shipped weights do not match the registry: expected {entry.sha256}, "
                                 f"got {digest}", shipped)
        return shipped
    if cached.is_file():
        if sha256_of(cached) == entry.sha256:
            return cached
        cached.unlink()
    if not entry.url:
        raise AmodalkitError(f"zoo model {name!r} has no url and its file is not shipped", shipped)
    _download(entry.url, cached, entry, quiet)
    return cached


def load(name: str, device: str = "cpu"):
    """A ready-to-use method (model with weights) for a zoo entry: ``amodalkit.zoo.load(NAME)``."""
    from amodalkit.models.registry import method_from_checkpoint

    return method_from_checkpoint(fetch_weights(name, quiet=True), device=device)


def format_registry(entries: dict[str, ZooEntry]) -> str:
    """The table printed by ``amodalkit zoo list``."""
    if not entries:
        return "no models registered"
    lines = []
    for e in entries.values():
        m = e.metrics
        metric = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        shipped = weights_paths(e)[0].is_file()
        lines.append(f"{e.name}  [{e.model}]  {e.size / 1e6:.1f} MB  "
                     f"{'shipped' if shipped else 'download'}  sha256 {e.sha256[:12]}")
        lines.append(f"    trained on: {e.training_data}")
        if e.flow:
            kind = ("the generator's, an upper bound" if e.flow == "exact"
                    else "estimated from the frames: the paper's protocol")
            lines.append(f"    flow: {e.flow} ({kind})")
        if metric:
            lines.append(f"    metrics: {metric}")
        spread = e.seed_spread()
        if spread:
            seeds = ", ".join(e.seeds["per_seed"])
            shown = "; ".join(f"{k} {v['mean']:.4f} ± {v['sd']:.4f}" for k, v in spread.items())
            lines.append(f"    over seeds {seeds} (mean ± sd, n={next(iter(spread.values()))['n']}): {shown}")
            lines.append(f"    shipped: seed {e.seeds.get('shipped')}; {e.seeds.get('data', '')}")
    return "\n".join(lines)
