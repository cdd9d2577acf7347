"""An estimate's figures: one StageEstimate per stage (time, disk, memory, and how each was obtained),
and the Estimate of the whole run with its totals and the JSON `mer estimate --json` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.estimate.inputs import CorpusSize
from pipeline.estimate.rates import Machine

#: A fresh stage process: Python, torch and the pipeline imported, before any model is built (MB).
#: Measured: `python -c "import torch, pipeline.extract.runner"` peaks at ≈ 350-450 MB RSS here.
PROCESS_BASE_MB = 400.0

#: stages whose work is shared by the local workers (pipeline.core.compute): clips, runs or trained runs
SHARED = ("faces", "face_embed", "resnet50", "lld", "compare", "wav2vec2", "bert", "train", "importance",
          "train_eliminate", "evaluate", "evaluate_eliminate")


@dataclass
class StageEstimate:
    stage: str
    processes: int  # DVC stages of this family (train@…: one per model × strategy)
    cpu_s: float | None
    gpu_s: float | None
    disk_bytes: float | None
    peak_mb: float | None
    how_time: str
    how_disk: str
    how_memory: str
    notes: list[str] = field(default_factory=list)
    fixed_s: float = 0.0  # of cpu_s: the start-up, paid once however many workers share the rest


@dataclass
class Estimate:
    corpus: CorpusSize
    kind: str  # this machine's
    rates_kind: str | None  # the kind whose rates were used
    machine: Machine
    stages: list[StageEstimate]
    notes: list[str]
    warnings: list[str]

    def totals(self) -> dict[str, float | None]:
        def total(attr: str) -> float | None:
            vals = [getattr(s, attr) for s in self.stages]
            return None if all(v is None for v in vals) else sum(v for v in vals if v is not None)

        return {"cpu_s": total("cpu_s"), "gpu_s": total("gpu_s"), "disk_bytes": total("disk_bytes"),
                "peak_mb": max((s.peak_mb for s in self.stages if s.peak_mb is not None), default=None)}

    def to_json(self) -> dict:
        out = asdict(self)
        out["totals"] = self.totals()
        out["corpus"]["mean_s"] = self.corpus.mean_s
        return out
