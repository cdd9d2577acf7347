"""DVC stage `evaluate`: trained runs (data/models and data/models_eliminate) × seeds × missing-modality
conditions on the test partition."""

from pipeline.config import EVALUATE_DIR, METRICS_DIR, MODELS_DIR, load_section
from pipeline.evaluate import evaluate_all
from pipeline.segments import load_segments
from pipeline.stage import run_stage
from pipeline.train import MODELS_ELIMINATE_DIR


def main() -> None:
    params = load_section("evaluate")
    out = evaluate_all(load_segments(), [MODELS_DIR, MODELS_ELIMINATE_DIR], params, EVALUATE_DIR, METRICS_DIR)
    for model, conds in out.metrics.items():
        for cond, m in conds.items():
            print(f"{model:>24} {cond:<20} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))


if __name__ == "__main__":
    run_stage(main)
