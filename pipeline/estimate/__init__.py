"""`mer estimate`: the expected wall time, disk written and peak memory of every stage `dvc repro` would
run, before a long run, so that a user knows whether to start it here or on a cluster (issue 20, 3).

Inputs:
- the corpus: data/corpus/manifest.parquet when the corpus stage has run (its clip count and each
  clip's duration), else the corpus's known size (`KNOWN_CORPORA`, sourced per entry), else `--clips`;
- the rates of this machine: `benchmarks/rates.json`, one entry per CPU kind (`cpu_kind()`, from the
  /proc/cpuinfo flags that decide the speed of our kernels: avx2 < avx512f < avx512_bf16 < amx),
  written by `mer estimate --calibrate` (the real extractors run in-process on a few demo clips, as
  benchmarks/extract.py does). A kind with no figures borrows the nearest kind's, and the output says so;
- the scale rehearsal's JSON lines `benchmarks/results/scale_<preset>_<fraction>.json` (benchmarks/
  scale.py) for the stages after extraction, when present.

Every figure carries how it was obtained (`how`): measured rate × media seconds, an analytic byte
count (rows × dim × 4), the rehearsal's measurement extrapolated linearly, or "not measured".
Nothing here reads the media or grows with the corpus beyond the manifest's duration column.

The modules: inputs.py (the corpus's size, params with a preset), rates.py (this machine, its measured
rates, the rehearsals), shapes.py (feature tables, sequences, recipes), result.py (StageEstimate,
Estimate), stages.py (`estimate`: the corpus and extraction stages), after_extraction.py (segment,
train, importance, evaluate, report), calibration.py (`mer estimate --calibrate`).
"""

from pipeline.estimate.calibration import (
    EXTRACTOR_MODULES,
    calibrate,
    measure_train_steps,
)
from pipeline.estimate.inputs import (
    KNOWN_CORPORA,
    CorpusSize,
    EstimateError,
    KnownCorpus,
    corpus_size,
    load_params,
)
from pipeline.estimate.rates import (
    CPU_LEVELS,
    RATES_FILE,
    RESULTS_DIR,
    Machine,
    cpu_kind,
    load_rates,
    nearest_kind,
    read_rehearsals,
    this_machine,
)
from pipeline.estimate.result import PROCESS_BASE_MB, Estimate, StageEstimate
from pipeline.estimate.shapes import (
    WORDS_PER_SECOND,
    backbone_config,
    backbone_factor,
    feature_dim,
    feature_rate,
)
from pipeline.estimate.stages import EXTRACTION, POST, dvc_stage_names, estimate

__all__ = [
    "CPU_LEVELS", "EXTRACTION", "EXTRACTOR_MODULES", "KNOWN_CORPORA", "POST", "PROCESS_BASE_MB", "RATES_FILE",
    "RESULTS_DIR", "WORDS_PER_SECOND", "CorpusSize", "Estimate", "EstimateError", "KnownCorpus", "Machine",
    "StageEstimate", "backbone_config", "backbone_factor", "calibrate", "corpus_size", "cpu_kind",
    "dvc_stage_names", "estimate", "feature_dim", "feature_rate", "load_params", "load_rates",
    "measure_train_steps", "nearest_kind", "read_rehearsals", "this_machine",
]
