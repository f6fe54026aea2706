"""The rows of the paper's tables a benchmark produces, and the data and results folders they need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import claim_output_dir
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method, get_model_spec, list_models, method_from_checkpoint
from amodalkit.models.savos.config import MODEL_NAME as SAVOS
from amodalkit.tables.config import SPLITS, BenchmarkConfig

#: Table 2 of the paper (FISHBOWL): the full model and its ablations, (full, occluded) mean IoU
PAPER_FISHBOWL_ABLATIONS = {SAVOS: (0.8863, 0.7155), "no_consistency": (0.8606, 0.6447),
                            "no_bidirectional": (0.8749, 0.6849), "no_temporal": (0.8785, 0.6894),
                            "no_flow": (0.8508, 0.6188), "no_image": (0.8673, 0.6634)}


ABLATION_LABELS = {"no_consistency": "w/o consistency loss", "no_bidirectional": "w/o bi-directional",
                   "no_temporal": "w/o temporal embedding", "no_flow": "w/o optical flow",
                   "no_image": "w/o image"}


@dataclass(frozen=True)
class Row:
    """One line of the tables: a method with fixed options, maybe trained, maybe adapted at test time."""

    name: str
    method: str
    label: str
    options: dict = field(default_factory=dict)
    run: str | None = None
    tta: bool = False
    ablation: str | None = None
    paper: tuple[float, float] | None = None


def plan_rows(cfg: BenchmarkConfig) -> list[Row]:
    """The rows to produce, in the paper's order (Table 1, Table 4, then Table 2's ablations)."""
    rows = []
    for name in (m for m in list_models() if m in cfg.methods):
        spec = get_model_spec(name)
        for tr in spec.table:
            rows.append(Row(tr.name, name, tr.label, dict(tr.options), run=name if spec.trained else None,
                            paper=tr.paper))
        if name == SAVOS and cfg.tta:
            rows.append(Row("savos-tta", SAVOS, "SaVos + test-time adaptation", run=SAVOS, tta=True))
    for a in cfg.ablations:
        rows.append(Row(f"savos-{a}", SAVOS, f"SaVos {ABLATION_LABELS[a]}", run=f"savos-{a}", ablation=a,
                        paper=PAPER_FISHBOWL_ABLATIONS[a]))
    return rows


def find_splits(cfg: BenchmarkConfig, rows: list[Row]) -> dict[str, list[Path]]:
    """The shards of each split the rows need: test always, train and val when something trains."""
    data = cfg.data_dir()
    if not data.is_dir():
        raise AmodalkitError("no such data folder (make one with `amodalkit gen-chewing-gum DIR`)", data)
    needed = SPLITS if any(r.run for r in rows) else ("test",)
    splits = {}
    for split in needed:
        found = sorted(data.glob(f"{split}-*.h5"))
        if not found:
            raise AmodalkitError(f"no {split}-*.h5 shards in the data folder (the benchmark needs the "
                                 f"{', '.join(needed)} splits `amodalkit gen-chewing-gum DIR` writes)", data)
        splits[split] = found
    return splits


def claim_results_dir(cfg: BenchmarkConfig) -> None:
    """Write config.json, or check that the one already there is the same configuration."""
    claim_output_dir(Path(cfg.out) / "config.json", cfg.record(),
                     "this results folder holds a benchmark with other settings; rerun with the same "
                     "options to resume, or pick a new --out")


def build_row_method(cfg: BenchmarkConfig, row: Row, checkpoint: str | Path | None = None) -> AmodalMethod:
    """The method of a row: from the registry, or loaded back from its trained checkpoint."""
    if row.run is None:
        return build_method(row.method, **row.options)
    from amodalkit.device import resolve_device

    if checkpoint is None:
        raise AmodalkitError(f"row {row.name!r} needs its trained checkpoint")
    method = method_from_checkpoint(checkpoint, device=str(resolve_device(cfg.device)))
    if method.name != row.method:
        raise AmodalkitError(f"the checkpoint holds a {method.name!r} model, not {row.method!r}", checkpoint)
    if row.tta:
        from amodalkit.models.savos.tta import TTAConfig

        method = method.with_tta(TTAConfig(max_iters=cfg.tta_max_iters))
    return method
