"""The training grid: models × strategies × seeds (× folds, × extra missing rates), each run trained by
`pipeline.train.loop.train_one`, in this process, on a pool of local worker processes or as Ray tasks
(`pipeline.core.compute.map_ordered`).

Apart from the loop because it is about which runs there are and where they execute, not how one run
trains. Run layout, summaries and history columns: pipeline/train/loop.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline.core.device import pick_device
from pipeline.core.paths import MODELS_DIR
from pipeline.runs.feed import ModelBuildError
from pipeline.runs.files import run_key, run_name
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import Segments
from pipeline.train.grid import extra_rates, resolve_grid
from pipeline.train.loop import train_one


def train_all(
    segments: Segments,
    params: TrainParams,
    out_dir: str | Path = MODELS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
    strategies: list[str] | None = None,
    importance: dict[str, Any] | None = None,
    rates: dict[str, list[float]] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Train the grid (`resolve_grid`) × `params.seeds` (under `all_models`, models that cannot be built
    for `train.modalities` are skipped with a message); returns {"<model>/<strategy>": {"seed_<s>":
    summary}} (keys "fold_<k>/seed_<s>" under a protocol with several folds, each fold trained on its own
    partition). `importance`: {model: its data/importance/<model>.json entry}. `rates` (params.yaml
    grid.rates): {strategy: [training missing rates]}; each rate but the configured one also trains
    every seed (and fold) of the strategy's families, under rate_<r>/ (keys "rate_<r>/seed_<s>", after
    the family's own runs, which stay as they are without `rates`).

    Backend (`pipeline.core.compute`, environment variables): each (model, strategy, seed, fold) run is an
    item: locally on a pool of one worker process per core (MER_WORKERS; 1: one after the other in this
    process, and on a GPU by default), under MER_BACKEND=ray a Ray task asking for MER_CPUS_PER_WORKER
    CPUs and MER_GPUS_PER_WORKER GPUs; each writes its own run directory; summaries come back in the
    grid's order, errors as the one-process loop raises them. Runs are seeded, so with 1 thread per
    worker (MER_THREADS=1) model.pt and history.csv are byte-identical whatever the worker count."""
    from pipeline.core.compute import compute_settings, map_ordered, worker_count

    segments.require(list(params.modalities), "training")
    pairs = resolve_grid(params, strategies, importance)
    runs: list[tuple[str, str, int, int | None, float | None]] = [
        (m, s, seed, fold, None) for m, s in pairs for fold in segments.fold_ids for seed in params.seeds]
    runs += [(m, s, seed, fold, r) for m, s in pairs for r in extra_rates(params, s, (rates or {}).get(s))
             for fold in segments.fold_ids for seed in params.seeds]
    views = {fold: segments.for_fold(fold or 0) for fold in segments.fold_ids}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    unbuildable: set[str] = set()
    settings = compute_settings()
    gpu = pick_device(device).type == "cuda"
    # in this process alone: each run shows its own progress bar
    inline = settings.backend == "local" and worker_count(len(runs), settings, gpu) == 1

    def run(i: int) -> dict[str, Any] | ModelBuildError | None:
        # by index: a Ray worker unpickles `runs` with params in one piece, so model.pt (a pickle, whose
        # bytes follow which of its strings are one object) is byte-identical to the local run's.
        # cloudpickle sends this closure by value and `train_one` by reference (pipeline.train.loop.train_one)
        model, strategy, seed, fold, rate = runs[i]
        if model in unbuildable:  # inline: not trained at all (a worker sees its own, empty copy)
            return None
        try:
            return train_one(
                views[fold], params, model, strategy, seed, out_dir, device, progress and inline, (importance or {}).get(model), fold,
                rate,
            )
        except ModelBuildError as e:
            return e

    results = map_ordered(run, range(len(runs)), settings=settings, gpu=gpu)
    for (model, strategy, seed, fold, rate), result in tqdm(
        zip(runs, results), total=len(runs), desc="runs", disable=not progress or len(runs) < 2
    ):
        if model in unbuildable:
            continue
        if isinstance(result, ModelBuildError):
            if not params.all_models:
                results.close()
                raise result
            # `all_models`: a model that does not take these inputs is left out, and said so
            unbuildable.add(model)
            out.pop(run_name(model, strategy), None)
            tqdm.write(f"skipping model '{model}' (train.all_models): {result}")
            continue
        out.setdefault(run_name(model, strategy), {})[run_key(seed, fold, rate)] = result
    return out
