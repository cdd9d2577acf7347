"""DVC stage `evaluate`: trained runs (data/models and data/models_eliminate) × seeds × missing-modality
conditions on the test partition."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import EVALUATE_DIR, METRICS_DIR, MODELS_DIR, load_section  # noqa: E402
from pipeline.evaluate import evaluate_all  # noqa: E402
from pipeline.segments import load_segments  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402
from pipeline.train import MODELS_ELIMINATE_DIR  # noqa: E402


def main() -> None:
    params = load_section("evaluate")
    out = evaluate_all(load_segments(), [MODELS_DIR, MODELS_ELIMINATE_DIR], params, EVALUATE_DIR, METRICS_DIR)
    for model, conds in out.metrics.items():
        for cond, m in conds.items():
            print(f"{model:>24} {cond:<20} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))


if __name__ == "__main__":
    run_stage(main)
