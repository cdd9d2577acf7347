"""DVC stage `resnet50`: ResNet50-VGGFace2 embeddings of the MTCNN face crops (params.yaml `resnet50`) → data/features/resnet50.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("resnet50"))
