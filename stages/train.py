"""DVC stage `train`: one model per seed (params.yaml `train`) → data/models, data/metrics/train.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import METRICS_DIR, MODELS_DIR, load_section  # noqa: E402
from pipeline.segments import load_segments  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402
from pipeline.store import write_json  # noqa: E402
from pipeline.train import train_all  # noqa: E402


def main() -> None:
    params = load_section("train")
    summary = train_all(load_segments(), params, MODELS_DIR)
    write_json(METRICS_DIR / "train.json", summary)
    for model, runs in summary.items():
        for run, r in runs.items():
            print(f"{model} {run}: best epoch {r['best_epoch']}, devel macro-F1 {r['devel_macro_f1']:.4f}")


if __name__ == "__main__":
    run_stage(main)
