"""The `segment` section of params.yaml (`SegmentParams`, its `partition`) and the stage's error."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.core.config import Problems, Section
from pipeline.core.errors import PipelineError
from pipeline.segment.layouts import context_frames

__all__ = ["PartitionParams", "SegmentError", "SegmentParams"]


class PartitionParams(Section):
    """Which clips train, select and test (pipeline/segment/protocols.py)."""

    protocol: Literal["corpus", "official", "speaker_random", "leave_one_group_out"] = Field(
        "corpus", description="corpus: the corpus's split (else one seeded speaker split); official: its validation "
        "set tests, devel carved from its training speakers (Aff-Wild2; 002, 004); speaker_random: "
        "`repeats` speaker splits (001 §4.3); leave_one_group_out: a fold per `group` (003)",
    )
    devel: float = Field(0.2, ge=0, lt=1, description="share of speakers for devel (of the training groups' under leave_one_group_out)")
    test: float = Field(0.2, gt=0, lt=1, description="share of speakers for test (speaker splits)")
    repeats: int = Field(1, ge=1, description="speaker_random: number of fresh splits (001 §4.3: 20)")
    group: Literal["speaker", "session"] = Field("speaker", description="leave_one_group_out: what a fold holds out")
    devel_from: Literal["training", "held_out"] = Field(
        "training", description="leave_one_group_out: devel speakers drawn from the training groups (a `devel` share) "
        "or from the held-out group (half its speakers, seeded; the other half tests: 003 §5.3)")
    seed: int = 0


class SegmentParams(Section):
    """The `segment` section of params.yaml."""

    # modality name -> feature table name under data/features (faces come from face_embed)
    modalities: dict[str, str] = Field(
        default_factory=lambda: {"face": "vggface", "acoustic": "egemaps", "speech": "wav2vec2", "text": "bert"}
    )
    layout: Literal["aligned", "windows", "frames", "native"] = Field(
        "aligned", description="aligned: one grid, one sequence per clip; windows: overlapping windows of long "
        "clips (000); frames: samples of `frames` frames, faster modalities stacked (002); native: each modality "
        "at its own rate and length (003)",
    )
    rate_hz: float = Field(5.0, gt=0, description="aligned/windows: the common grid; frames: the frame rate")
    max_steps: int = Field(64, ge=1, description="aligned: sequences are cut/padded to this many steps; "
                           "native: the maximum of a modality not in native_max_steps")
    win: int = Field(250, ge=1, description="windows: steps per window (000 §5.3: 250 steps = 125 s at 2 Hz)")
    hop: int = Field(50, ge=1, description="windows: steps between window starts (000 §5.3: 50 steps = 25 s)")
    frames: int = Field(100, ge=1, description="frames: frames per sample (002 §3.3: 100)")
    stack: list[str] = Field(
        default_factory=list, description="frames: modalities whose rows within one frame are stacked (k·D dims), "
        "not averaged (002 §3.2.2: the ComParE LLDs)",
    )
    stack_seconds: float | None = Field(
        None, ge=0, description="frames: instead, each frame of a `stack` modality gets that modality averaged "
        "onto the frames over a window of this many seconds centred on it, n = round(stack_seconds × rate_hz) "
        "frames side by side (n·D dims; 002 §3.2.2: 2 s at 30 fps, 60 × 65 = 3,900-d); empty or 0: off",
    )
    native_max_steps: dict[str, int] = Field(
        default_factory=dict, description="native: {modality: maximum length}; others take max_steps "
        "(003 §5.3: audio 400, vision 40, language 50)",
    )
    partition: PartitionParams = PartitionParams()

    @model_validator(mode="after")
    def _named_modalities(self) -> "SegmentParams":
        known = ", ".join(self.modalities)
        problems = [] if self.modalities else [("modalities", "names no modality; expected {name: feature table}, "
                                                "e.g. {face: vggface, acoustic: egemaps}")]
        problems += [(f"stack.{i}", f"'{m}' is not in segment.modalities ({known})")
                    for i, m in enumerate(self.stack) if m not in self.modalities]
        problems += [(f"stack.{i}", f"'{m}' is listed twice") for i, m in enumerate(self.stack) if m in self.stack[:i]]
        if self.stack_seconds and context_frames(self.stack_seconds, self.rate_hz) < 1:
            problems.append(("stack_seconds", f"{self.stack_seconds:g} s at segment.rate_hz {self.rate_hz:g} Hz is "
                             f"round({self.stack_seconds * self.rate_hz:g}) = 0 frames; use at least one frame period "
                             f"({1 / self.rate_hz:g} s), or 0 for no context"))
        problems += [(f"native_max_steps.{m}", f"'{m}' is not in segment.modalities ({known})")
                     for m in self.native_max_steps if m not in self.modalities]
        problems += [(f"native_max_steps.{m}", f"must be at least 1, got {v}")
                     for m, v in self.native_max_steps.items() if v < 1]
        if problems:
            raise Problems(problems)
        return self


class SegmentError(PipelineError):
    """Segmentation cannot proceed; the message names the table or clip and the cause."""
