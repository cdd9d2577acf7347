"""DVC stage `bert`: manifest → data/features/bert.parquet (see pipeline/extract/bert.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import MANIFEST, load_section  # noqa: E402
from pipeline.corpus.manifest import read_manifest  # noqa: E402
from pipeline.extract.bert import BertWords  # noqa: E402
from pipeline.extract.runner import extract_corpus  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main() -> None:
    params = load_section("bert")
    _, clips = read_manifest(MANIFEST)
    extractor = BertWords(params)
    out = extract_corpus(extractor, clips, on_error=params.on_error)
    print(f"bert: {len(clips)} clips → {out} ({extractor.meta().weights_statement})")


if __name__ == "__main__":
    run_stage(main)
