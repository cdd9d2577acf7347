"""DVC stage `resnet50`: ResNet50-VGGFace2 embeddings of the MTCNN face crops (params.yaml `resnet50`) → data/features/resnet50.parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import extract_stage, run_stage  # noqa: E402

if __name__ == "__main__":
    run_stage(lambda: extract_stage("resnet50"))
