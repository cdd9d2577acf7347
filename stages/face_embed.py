"""DVC stage `face_embed`: VGG-Face fc6 of the MTCNN face crops (params.yaml `face_embed`) → data/features/vggface.parquet."""

from pipeline.core.stage import run_stage
from pipeline.extract.stage import extract_stage

if __name__ == "__main__":
    run_stage(lambda: extract_stage("vggface"))
