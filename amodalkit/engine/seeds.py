"""One run per seed: the spread of a training recipe, so a result can state it.

``train_seeds`` trains the same config once per seed into ``OUT/seed-N`` (each an ordinary
run folder, resumable with ``--resume``) and writes ``OUT/seeds.json``: every run's summary,
and mean and standard deviation (sample, n-1) of the selected loss over the seeds.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from amodalkit.engine.trainer import TrainConfig, train_model
from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import write_json

SEEDS_FILE = "seeds.json"


def mean_sd(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values), "values": list(values)}


def seed_dir(out: str | Path, seed: int) -> Path:
    """The run folder of one seed."""
    return Path(out) / f"seed-{seed}"


def train_seeds(cfg: TrainConfig, model_name: str, model_config: object, seeds: list[int]) -> dict:
    """Train `cfg` once per seed into OUT/seed-N; write and return OUT/seeds.json's record."""
    runs = {}
    for seed in seeds:
        run = replace(cfg, seed=seed, out=str(seed_dir(cfg.out, seed)))
        runs[str(seed)] = train_model(run, model_name, model_config)
    selected = {s["selected_on"] for s in runs.values()}
    record = {"model": model_name, "seeds": seeds, "selected_on": "/".join(sorted(selected)),
              "best_loss": mean_sd([runs[str(s)]["best_loss"] for s in seeds]), "runs": runs}
    if cfg.select_by != "loss":
        scores = [runs[str(s)]["best_score"] for s in seeds]
        record |= {"selected_by": cfg.select_by, "best_score": mean_sd(scores)}
    write_json(Path(cfg.out) / SEEDS_FILE, record)
    return record


def parse_seeds(seeds: str | None, seed: int) -> list[int] | None:
    """``--seeds 0,1,2`` as a list (None without it); it replaces --seed, so both together is an error."""
    if seeds is None:
        return None
    if seed != 0:
        raise AmodalkitError("--seeds replaces --seed; give one of them")
    try:
        out = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise AmodalkitError(f"--seeds takes comma-separated integers, got {seeds!r}") from exc
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise AmodalkitError(f"--seeds needs distinct seeds >= 0, got {seeds!r}")
    return out
