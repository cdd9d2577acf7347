"""The figures of the stages after extraction (segment, train, importance, evaluate, report): the scale
rehearsal's where it ran them, else analytic ones from the sequences, folds and grid runs of params and
the calibrated training steps."""

from __future__ import annotations

import math

from pipeline.estimate.inputs import CorpusSize
from pipeline.estimate.result import PROCESS_BASE_MB, SHARED, StageEstimate
from pipeline.estimate.shapes import _recipe, _sequences


def _folds(params: dict, corpus: CorpusSize) -> tuple[int, float, float]:
    """(folds, train share, test share) of segment.partition."""
    part = (params.get("segment") or {}).get("partition") or {}
    protocol = part.get("protocol", "corpus")
    test, devel = float(part.get("test", 0.2)), float(part.get("devel", 0.2))
    if protocol == "leave_one_group_out":
        g = max(2, (corpus.sessions or corpus.speakers) if part.get("group", "speaker") == "session" else corpus.speakers)
        return g, (1 - 1 / g) * (1 - devel), 1 / g
    folds = int(part.get("repeats", 1)) if protocol == "speaker_random" else 1
    return folds, (1 - test) * (1 - devel) if protocol != "speaker_random" else 1 - test - devel, test


def _runs(params: dict) -> list[tuple[str, str, int]]:
    """(model, strategy, trainings per fold and seed) of the grid: one per training rate and lr."""
    grid = params.get("grid") or {}
    rates = grid.get("rates") or {}
    out = []
    for model in grid.get("models") or []:
        for strategy in grid.get("strategies") or []:
            out.append((model, strategy, 1 + len(rates.get(strategy) or [])))
    for model in grid.get("eliminate") or []:
        out.append((model, "eliminate", 1))
    return out


def _post_extraction(params: dict, corpus: CorpusSize, kr: dict, rehearsal: dict | None, names: list[str],
                     notes: list[str]) -> list[StageEstimate]:
    n_seq, shapes, layout_how = _sequences(params, corpus)
    folds, train_share, test_share = _folds(params, corpus)
    width = sum(steps * (dim + 1) for steps, dim in shapes.values())  # values + presence mask (bytes/4)
    seg_bytes = n_seq * width * 4
    notes.append(f"sequences: {n_seq:,.0f} ({layout_how}); {folds} fold(s), train ≈ {train_share:.0%}, test ≈ {test_share:.0%}")
    runs = _runs(params)
    tr = kr.get("train_step_s") or {}
    reh = (rehearsal or {}).get("stages") or {}
    if rehearsal:
        notes.append(f"stages after extraction: the scale rehearsal ({', '.join(rehearsal['files'])}), its times and bytes "
                     "scaled by this corpus's clips over its clips and by the runs it cut (seeds, repeats, model × strategy families)")
        if rehearsal.get("failed"):
            notes.append(f"rehearsal stages that did not finish (analytic figures instead): {', '.join(rehearsal['failed'])}")
    seeds = len((params.get("train") or {}).get("seeds") or [0])
    out: list[StageEstimate] = []

    def from_rehearsal(stage: str, processes: int, analytic: StageEstimate) -> StageEstimate:
        r = reh.get(stage)
        if not r:
            return analytic
        frac = r["clips"] / max(corpus.clips, 1) if r.get("clips") else r.get("fraction") or 1.0
        runs = r.get("runs", 1.0) * r.get("families", 1.0) if stage not in ("segment", "report") else 1.0
        if r.get("full_s") is not None:
            t, how_t = r["full_s"], "rehearsal: capped epochs timed, full-size training extrapolated by the rehearsal"
        else:
            t, how_t = r["wall_s"] / frac * runs, f"rehearsal wall s / {frac:.3g}" + (f" × {runs:g} runs it cut" if runs != 1 else "")
            if stage in SHARED and r.get("workers", 1) > 1:  # its wall is that many processes': one process's time
                t, how_t = t * r["workers"], how_t + f" × the {r['workers']} workers it ran on"
        peak, how_m = r["peak_rss_mb"], "rehearsal peak RSS"
        if frac < 1:  # memory that grows at most linearly: the smaller of that and the analytic bound
            linear = PROCESS_BASE_MB + max(r["peak_rss_mb"] - PROCESS_BASE_MB, 0) / frac
            peak = max(r["peak_rss_mb"], min(linear, analytic.peak_mb or linear))
            how_m = (f"rehearsal peak ({r['peak_rss_mb']:,.0f} MB at {frac:.3g} of the corpus) extrapolated: the smaller "
                     f"of linear growth above the process base and {analytic.how_memory}")
        per_clip = stage not in ("train", "train_eliminate")  # a model.pt's size does not grow with the corpus
        disk = r["bytes_written"] / (frac if per_clip else 1.0) * runs if r["bytes_written"] else analytic.disk_bytes
        how_d = ("rehearsal bytes written" + (f" / {frac:.3g}" if per_clip else " (models: not scaled by the corpus)")
                 + (f" × {runs:g} runs" if runs != 1 else "")) if r["bytes_written"] else analytic.how_disk
        return StageEstimate(stage, processes, t, None, disk, peak or analytic.peak_mb, how_t, how_d, how_m, analytic.notes)

    if "segment" in names:
        out.append(from_rehearsal("segment", 1, StageEstimate(
            "segment", 1, None, None, seg_bytes, PROCESS_BASE_MB + 2 * seg_bytes / 2**20, "not measured (needs the rehearsal)",
            "analytic: sequences × Σ steps × (dim + mask) × 4 B", "analytic bound: the feature rows and the segments held at once")))
    standard_runs = {m for m, s, _ in runs if s == "standard"}
    for family, strategies in (("train", lambda s: s != "eliminate"), ("train_eliminate", lambda s: s == "eliminate")):
        if family not in names:
            continue
        fam = [(m, s, k) for m, s, k in runs if strategies(s)]
        if not fam:
            continue
        steps_total, t_total, how_t = 0.0, 0.0, []
        for m, s, k in fam:
            rec = _recipe(params, m)
            lrs = len(rec.get("lr_grid") or [None])
            per_epoch = math.ceil(n_seq * train_share / int(rec.get("batch_size", 16)))
            steps = folds * seeds * k * lrs * int(rec.get("epochs", 40)) * per_epoch
            steps_total += steps
            st = _step_seconds(tr, m, rec, shapes, params)
            t_total = None if (t_total is None or st is None) else t_total + steps * st
        how = (f"{steps_total:,.0f} optimizer steps (every epoch: early stopping can only shorten it) × s/step calibrated "
               "for the model (nearest record, scaled by tokens per batch × parameters)"
               if t_total is not None else f"{steps_total:,.0f} optimizer steps; s/step not measured (rehearsal or calibration)")
        mparams = _model_bytes(params, fam, shapes)
        disk = sum(folds * seeds * k for _, _, k in fam) * (mparams or 0) * 2 + len(fam) * 2e5
        peak = PROCESS_BASE_MB + (seg_bytes + 4 * (mparams or 0)) / 2**20
        out.append(from_rehearsal(family, len(fam), StageEstimate(
            family, len(fam), t_total, None, disk, peak, how,
            "analytic: a model.pt per fold × seed × rate (parameters × 4 B, + its best copy)",
            "analytic bound: the segments loaded whole + parameters, gradients and Adam's two moments")))
    conds = _conditions(params, list(shapes))
    for family, fam in (("evaluate", [r for r in runs if r[1] != "eliminate"]), ("evaluate_eliminate", [r for r in runs if r[1] == "eliminate"]),
                        ("importance", [(m, "standard", 1) for m in standard_runs & set((params.get("grid") or {}).get("eliminate") or [])])):
        if family not in names or not fam:
            continue
        n_test = n_seq * test_share
        t: float | None = 0.0
        for m, s, k in fam:
            rec = _recipe(params, m)
            st = _step_seconds(tr, m, rec, shapes, params)
            # importance scores devel with each modality out, and all present
            n_c = conds if family != "importance" else len(shapes) + 1
            batches = math.ceil((n_test if family != "importance" else n_seq * 0.2) / int(rec.get("batch_size", 16)))
            # a forward pass costs about a third of a training step (forward + backward ≈ 3 forwards)
            t = None if (t is None or st is None) else t + folds * seeds * k * n_c * batches * st / 3
        test_bytes = n_test / max(folds, 1) * width * 4 if folds > 1 else n_test * width * 4
        out.append(from_rehearsal(family, len(fam), StageEstimate(
            family, len(fam), t, None, len(fam) * folds * seeds * conds * n_test * 8 + len(fam) * 1e5,
            PROCESS_BASE_MB + (seg_bytes + 2 * test_bytes) / 2**20,
            f"forward passes ({conds} conditions × test batches × fold × seed) × s/step / 3 (a forward ≈ a third of a step)" if t is not None else "not measured (needs the rehearsal or a train calibration)",
            "analytic: one prediction row (8 B per output) per test sequence × condition × seed",
            "analytic bound: the segments + one condition of the test split at a time")))
    if "report" in names:
        out.append(from_rehearsal("report", 1, StageEstimate(
            "report", 1, None, None, 5e6 + len(runs) * 2e5, PROCESS_BASE_MB + 300, "not measured (needs the rehearsal)",
            "the demo's report (dvc.lock: 5.1 MB) + per run", "analytic: the figures' data (not measured)")))
    return out


def _conditions(params: dict, modalities: list[str]) -> int:
    """The number of evaluation conditions evaluate.conditions expands to (pipeline/missing/conditions.py)."""
    from pipeline.missing.conditions import parse_conditions

    entries = (params.get("evaluate") or {}).get("conditions") or []
    mods = [m for m in (params.get("train") or {}).get("modalities") or modalities if m in modalities] or modalities
    try:
        return len(parse_conditions(entries, mods))
    except Exception:  # an entry this version cannot expand: count the entries
        return len(entries)


def _step_seconds(tr: dict, model: str, rec: dict, shapes: dict[str, tuple[int, int]], params: dict) -> float | None:
    """s per training step of `model` at `rec`'s batch and `shapes`: the calibrated record of the same
    model nearest in tokens per batch and parameters, scaled by tokens × parameters (a step costs
    ≈ 6 FLOPs per parameter and token), or None when the model was never calibrated."""
    records = tr.get(model)
    if not records:
        return None
    records = [records] if isinstance(records, dict) else records
    tokens = int(rec.get("batch_size", 16)) * sum(s for s, _ in shapes.values())
    n = _param_count(params, model, shapes)

    def ratio(r: dict) -> float:
        t = tokens / (float(r.get("batch", 16)) * float(r.get("steps", 64)))
        return t * (n / r["params"] if n and r.get("params") else 1.0)

    best = min(records, key=lambda r: abs(math.log(ratio(r))))
    return float(best["s"]) * ratio(best)


def _param_count(params: dict, model: str, shapes: dict[str, tuple[int, int]]) -> int | None:
    """Trainable parameters of `model` as the train stage builds it for these shapes (built on the meta
    device: shapes only), or None when it cannot be built."""
    try:
        import torch

        from pipeline.models.registry import (
            build_model,
            count_parameters,
            fit_modalities,
        )

        train = params.get("train") or {}
        dims = {m: d for m, (_, d) in shapes.items() if m in (train.get("modalities") or shapes)}
        task = train.get("task", "classification")
        n_out = 4 if task == "classification" else len(train.get("targets") or [1])
        over = ((params.get("model") or {}).get(model) or {}).get("params") or {}
        with torch.device("meta"):
            return count_parameters(build_model(model, fit_modalities(model, dims), n_out, task, over))
    except Exception:  # an unbuildable model: no parameter scaling
        return None


def _model_bytes(params: dict, fam: list, shapes: dict) -> float | None:
    """Largest parameter count × 4 B of the family's models."""
    counts = [_param_count(params, m, shapes) for m in {m for m, _, _ in fam}]
    return max((c for c in counts if c), default=0) * 4.0 or None
