"""DVC stages `train@<model>-<strategy>` and `train_eliminate@<model>`: one run family, every seed.

    python stages/train.py --model crossmodal --strategy clip_zero
        params.yaml `train` (shared loop), `model.crossmodal`, `strategy.clip_zero`, `grid.rates.clip_zero`
        → data/models/crossmodal/clip_zero/seed_<s>/{model.pt, history.csv}, …/train.json
          and, for each other rate r of grid.rates.clip_zero, …/clip_zero/rate_<r>/seed_<s>/
    python stages/train.py --model crossmodal --strategy eliminate
        000 §4's eliminate training, driven by data/importance/crossmodal.json (stage importance@crossmodal)
        → data/models/crossmodal/eliminate/…
"""

import argparse

from pipeline.core.paths import MODELS_DIR
from pipeline.core.stage import run_stage
from pipeline.core.store import write_json
from pipeline.evaluate.importance import (
    IMPORTANCE_COPY,
    importance_file,
    read_importance,
)
from pipeline.runs.feed import ELIMINATE
from pipeline.segment.contract import load_segments
from pipeline.train.families import train_all
from pipeline.train.grid import family_params, family_rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", required=True)
    args = ap.parse_args(argv)
    params = family_params(args.model, args.strategy)
    importance = {args.model: read_importance(importance_file(args.model))} if args.strategy == ELIMINATE else None
    rates = {args.strategy: family_rates(args.strategy)} if args.strategy != ELIMINATE else None
    summary = train_all(load_segments(), params, MODELS_DIR, importance=importance, rates=rates)
    family = f"{args.model}/{args.strategy}"
    write_json(MODELS_DIR / args.model / args.strategy / "train.json", summary.get(family, {}))
    if importance:  # the search that drove these runs travels with them (the report shows it)
        write_json(MODELS_DIR / args.model / args.strategy / IMPORTANCE_COPY, importance[args.model])
    for seed, r in summary.get(family, {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("devel_"))
        print(f"{family} {seed}: best epoch {r['best_epoch']} of {r['epochs_run']}, {shown}")


if __name__ == "__main__":
    run_stage(main)
