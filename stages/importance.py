"""DVC stage `importance@<model>`: 000 §4's importance search over the model's `standard` runs on
the devel partition (params.yaml `importance`) → data/importance/<model>.json.

    python stages/importance.py --model crossmodal
"""

import argparse

from pipeline.core.config import load_section
from pipeline.core.paths import MODELS_DIR
from pipeline.core.stage import run_stage
from pipeline.evaluate.importance import (
    ImportanceError,
    importance_file,
    importance_search,
    write_importance,
)
from pipeline.runs.feed import STANDARD
from pipeline.segment.contract import load_segments


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    args = ap.parse_args(argv)
    result = importance_search(load_segments(), MODELS_DIR, load_section("importance"), only=args.model)
    if args.model not in result:
        raise ImportanceError(f"{MODELS_DIR}/{args.model}/{STANDARD}: no trained runs; the search needs them")
    r = result[args.model]
    write_importance(r, importance_file(args.model))
    rho = ", ".join(f"{m} {v:.3f}" for m, v in r["rho"].items()) or "none"
    print(f"{args.model}: important {r['important'] or 'none'} (devel {r['metric']}); ρ_eliminate {rho}")


if __name__ == "__main__":
    run_stage(main)
