"""DVC stage `importance`: 000 §4's importance search over the `standard` runs on the devel partition
(params.yaml `importance`) → data/importance/importance.json."""

from pipeline.config import MODELS_DIR, load_section
from pipeline.importance import IMPORTANCE_FILE, importance_search, write_importance
from pipeline.segments import load_segments
from pipeline.stage import run_stage


def main() -> None:
    result = importance_search(load_segments(), MODELS_DIR, load_section("importance"))
    write_importance(result, IMPORTANCE_FILE)
    for model, r in result.items():
        rho = ", ".join(f"{m} {v:.3f}" for m, v in r["rho"].items()) or "none"
        print(f"{model}: important {r['important'] or 'none'} (devel {r['metric']}); ρ_eliminate {rho}")
    if not result:
        print(f"no '{MODELS_DIR}/<model>/standard' runs: nothing to search")


if __name__ == "__main__":
    run_stage(main)
