"""DVC stages `evaluate@<model>-<strategy>` and `evaluate_eliminate@<model>`: one run family's seeds
under every missing-modality condition on the test partition (params.yaml `evaluate`)
→ data/evaluate/<model>/<strategy>/, and its headline metrics → metrics/<model>-<strategy>.json.

    python stages/evaluate.py --model crossmodal --strategy standard
"""

import argparse
from pathlib import Path

from pipeline.config import load_section
from pipeline.evaluate import HEADLINE_DIR, evaluate_all
from pipeline.paths import EVALUATE_DIR, MODELS_DIR
from pipeline.segments import load_segments
from pipeline.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", required=True)
    args = ap.parse_args(argv)
    family = f"{args.model}/{args.strategy}"
    headline = Path(HEADLINE_DIR) / f"{args.model}-{args.strategy}.json"
    out = evaluate_all(load_segments(), MODELS_DIR, load_section("evaluate"), EVALUATE_DIR / args.model / args.strategy,
                       headline, only=family)
    n = out.results.select("condition").n_unique()
    print(f"{family}: {out.results.select('seed').n_unique()} seeds × {n} conditions → {EVALUATE_DIR / args.model / args.strategy}")
    print(f"{family}: {headline.read_text().strip()}")


if __name__ == "__main__":
    run_stage(main)
