"""Running many independent units (a drive, a shard): local processes, a Dask cluster, or one process per GPU.

Units are idempotent and written atomically by the functions run here, so a unit a lost worker
left half done is simply computed again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from joblib import Parallel, delayed
from tqdm import tqdm

from amodalkit.errors import AmodalkitError

if TYPE_CHECKING:
    from dask.distributed import Client

#: one unit of work (a drive, a shard, a video range)
Unit = TypeVar("Unit")
#: the environment variable naming a Dask scheduler when no --scheduler is given
SCHEDULER_ENV = "AMODALKIT_SCHEDULER"


def scheduler_address(option: str | None) -> str | None:
    """The Dask scheduler to use: `option` (--scheduler), else $AMODALKIT_SCHEDULER, else None (local)."""
    return option or os.environ.get(SCHEDULER_ENV) or None


def worker_device(device: str, worker_index: int, n_gpus: int) -> str:
    """The device of local worker `worker_index`: ``auto`` and ``cuda`` go round-robin over `n_gpus` GPUs.

    Worker i gets ``cuda:{i % n_gpus}``; ``cpu``, an explicit ``cuda:N`` and any device when no
    GPU is visible stay as given (so ``cuda`` without a GPU still fails where it is resolved).
    """
    if device in ("auto", "cuda") and n_gpus > 0:
        return f"cuda:{worker_index % n_gpus}"
    return device


def worker_devices(device: str, jobs: int) -> list[str]:
    """:func:`worker_device` of each of `jobs` local workers, over the GPUs torch sees."""
    if device == "cpu" or jobs == 1:
        return [device] * jobs
    import torch

    n_gpus = torch.cuda.device_count()
    return [worker_device(device, i, n_gpus) for i in range(jobs)]


def run_tasks(func: Callable[[Unit], dict], tasks: Sequence[Unit], jobs: int = 1,
              scheduler: str | None = None, quiet: bool = False, unit: str = "task",
              resources: dict[str, float] | None = None) -> list[dict]:
    """``func`` of every unit, in the units' order: joblib (`jobs` processes) or a Dask cluster (`scheduler`).

    On Dask each unit is one task (``client.map``), with the worker `resources` it needs
    (e.g. ``{"GPU": 1}``: one task per GPU on workers started with ``--resources GPU=1``);
    a task of a worker that dies is run again elsewhere by the scheduler.
    """
    if not tasks:
        return []
    bar = dict(total=len(tasks), desc=f"{unit}s", unit=unit, disable=quiet)
    if scheduler is None:
        if jobs == 1:
            return [func(t) for t in tqdm(tasks, **bar)]
        work = [delayed(func)(t) for t in tasks]
        return list(tqdm(Parallel(n_jobs=jobs, return_as="generator")(work), **bar))
    client = connect(scheduler)
    from dask.distributed import as_completed

    try:
        check_resources(client, resources, scheduler)
        futures = client.map(func, list(tasks), pure=False, resources=resources)
        order = {f.key: i for i, f in enumerate(futures)}
        results: list[dict] = [{}] * len(futures)
        with tqdm(**bar) as progress:
            for done in as_completed(futures):
                results[order[done.key]] = done.result()
                progress.update()
        return results
    finally:
        client.close()


def connect(scheduler: str) -> Client:
    """A Dask client of the cluster at `scheduler`, or an error saying what to install or check."""
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise AmodalkitError("--scheduler needs the optional Dask extra: pip install 'dask[distributed]'") \
            from exc
    try:
        return Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AmodalkitError(f"cannot reach the Dask scheduler ({exc})", scheduler) from exc


def check_resources(client: Client, resources: dict[str, float] | None, scheduler: str) -> None:
    """Refuse a run whose tasks need worker resources no worker offers (they would wait forever)."""
    if not resources:
        return
    workers = client.scheduler_info().get("workers", {}).values()
    for name, amount in resources.items():
        if not any(w.get("resources", {}).get(name, 0) >= amount for w in workers):
            raise AmodalkitError(f"these tasks need {amount:g} {name} per task, and no worker of the cluster "
                                 f"offers it; start workers with: dask worker {scheduler} --resources "
                                 f"{name}=1 (one per GPU, each with its own CUDA_VISIBLE_DEVICES)", scheduler)


def run_on_devices(func: Callable[[Unit, str], dict], tasks: Sequence[Unit], devices: Sequence[str],
                   quiet: bool = False, unit: str = "task") -> list[dict]:
    """Run ``func(task, devices[i])`` in one worker process per device, worker i always on ``devices[i]``.

    Each worker takes the next task as it becomes free (balanced like joblib); results come
    in the order they finish. The first failure stops the others from taking new tasks and
    is raised. Workers are spawned, never forked (CUDA does not survive ``fork``).
    """
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    pending = list(reversed(tasks))
    lock = threading.Lock()
    stop = threading.Event()
    results: list[dict] = []
    context = multiprocessing.get_context("spawn")

    def lane(device: str, bar: tqdm) -> None:
        with ProcessPoolExecutor(1, mp_context=context) as worker:
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    task = pending.pop()
                try:
                    result = worker.submit(func, task, device).result()
                except BaseException:
                    stop.set()
                    raise
                with lock:
                    results.append(result)
                    bar.update()

    with tqdm(total=len(tasks), desc=f"{unit}s", unit=unit, disable=quiet) as bar, \
            ThreadPoolExecutor(len(devices)) as lanes:
        futures = [lanes.submit(lane, d, bar) for d in devices]
        try:
            for f in futures:
                f.result()
        except BaseException:
            stop.set()
            raise
    return results
