"""DVC stages `train` and `train_eliminate` (params.yaml `train`).

    python stages/train.py              every model × strategy × seed except `eliminate`
                                        → data/models, data/metrics/train.json
    python stages/train.py --eliminate  the `eliminate` strategy (000 §4), which needs the importance
                                        search (data/importance/importance.json)
                                        → data/models_eliminate, data/metrics/train_eliminate.json
When `eliminate` is asked for, the first stage also trains `standard` (the importance search needs it).
"""

import sys

from pipeline.config import METRICS_DIR, MODELS_DIR, load_section
from pipeline.importance import IMPORTANCE_FILE, read_importance
from pipeline.segments import load_segments
from pipeline.stage import run_stage
from pipeline.store import write_json
from pipeline.train import ELIMINATE, MODELS_ELIMINATE_DIR, STANDARD, known_strategies, train_all


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    eliminate = "--eliminate" in argv
    params = load_section("train")
    wanted = known_strategies() if params.all_models else list(params.strategies)
    if eliminate:
        out_dir, metrics = MODELS_ELIMINATE_DIR, METRICS_DIR / "train_eliminate.json"
        strategies = [ELIMINATE] if ELIMINATE in wanted else []
        importance = read_importance(IMPORTANCE_FILE) if strategies else None
    else:
        out_dir, metrics = MODELS_DIR, METRICS_DIR / "train.json"
        strategies = [s for s in wanted if s != ELIMINATE]
        if ELIMINATE in wanted and STANDARD not in strategies:
            strategies.insert(0, STANDARD)
        importance = None
    out_dir.mkdir(parents=True, exist_ok=True)  # a DVC out even when there is nothing to train
    summary = train_all(load_segments(), params, out_dir, strategies=strategies, importance=importance) if strategies else {}
    write_json(metrics, summary)
    for name, runs in summary.items():
        for run, r in runs.items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("devel_"))
            print(f"{name} {run}: best epoch {r['best_epoch']} of {r['epochs_run']}, {shown}")
    if not summary:
        print(f"nothing to train: no '{ELIMINATE}' strategy in train.strategies" if eliminate else "nothing to train")


if __name__ == "__main__":
    run_stage(main)
