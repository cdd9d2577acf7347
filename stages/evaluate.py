"""DVC stages `evaluate@<model>-<strategy>` and `evaluate_eliminate@<model>`: one run family's seeds
under every missing-modality condition on the test partition (params.yaml `evaluate`)
→ data/evaluate/<model>/<strategy>/, and its headline metrics → metrics/<model>-<strategy>.json.
Its log: one progress bar (stderr, drawn only while it runs) and one summary line.

    python stages/evaluate.py --model crossmodal --strategy standard
"""

import argparse
import json
from pathlib import Path

from pipeline.core.config import load_section
from pipeline.core.paths import EVALUATE_DIR, MODELS_DIR
from pipeline.core.stage import run_stage
from pipeline.evaluate.grid import HEADLINE_DIR, evaluate_all
from pipeline.segment.contract import load_segments


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", required=True)
    args = ap.parse_args(argv)
    family = f"{args.model}/{args.strategy}"
    headline = Path(HEADLINE_DIR) / f"{args.model}-{args.strategy}.json"
    out = evaluate_all(load_segments(), MODELS_DIR, load_section("evaluate"), EVALUATE_DIR / args.model / args.strategy,
                       headline, only=family)
    print(summary_line(family, out.results, json.loads(headline.read_text())))


def summary_line(family: str, results, headline: dict) -> str:
    """The stage's one line: replicates × conditions, and the headline metrics in compact form."""
    reps = results.select("fold", "seed").unique().height
    figures = ", ".join(f"{k} {v:.3f}" for metric in headline.values() for k, v in metric.items())
    metric = next(iter(headline), "")
    return f"{family}: {reps} runs × {results['condition'].n_unique()} conditions; {metric}: {figures}"


if __name__ == "__main__":
    run_stage(main)
