"""What the face-crop embedders share (`vggface`: VGG-Face fc6; `resnet50`: ResNet-50 on VGGFace2).

Both embed the crops of the `faces` stage, every present step with a frozen CNN, and write one row
per detection step; a step without a face is a present=False row of zeros. `FaceCropEmbedder` holds
all of it; a subclass only builds its network and says what it is.

* Detections come in memory: a mapping clip id → `ClipDetections` (or a callable giving a clip's
  detections, None for an unknown clip) and the table's metadata — what
  `pipeline.extract.faces.read_detections` returns. The registry reads data/faces/detections.parquet
  once for the stages; `mer predict` passes the detections it just made for its one file.

* Input: the crop is RGB 0–255 minus the network's mean colour, resized (bilinear) to 224² when the
  faces stage cropped to another size; no scaling by a std (both conversions' `meta`).
* Cache key: `input_fingerprint` hashes the clip's detection rows (t, present, crop bytes), not the
  video file, and `config_fingerprint` leaves out the faces stage's provenance, so a re-detection that
  yields the same crops re-embeds nothing; on_error changes no output and is left out too
  (batch_size is in: it cuts a clip's forward passes, and CPU kernels round other batch sizes
  differently).
* Speed and determinism: the runner hands `batch_clips` uncached clips at once; each clip's crops go
  through the network in forward passes of `batch_size` crops of that clip alone, from its first
  crop. Crops of several clips never share a pass: a conv or GEMM kernel's bits for one crop change
  with the batch around it, and a clip's embeddings must depend on the clip and the settings only,
  not on its neighbours, the resume point, the groups or the worker count (issue 22; measured cost:
  see benchmarks/extract.py and the report of issue 22). The network runs as an inference
  copy: batch norms folded into the convolutions (`torch.nn.utils.fusion`), channels-last memory
  layout (oneDNN's native one) and, in bf16, bf16 weights under bf16 autocast. `net` stays the plain
  fp32 network (reference and benchmark baseline).
* Precision (`bf16` in params): `auto` (default) measures both on this machine at first use and keeps
  the faster one that agrees with fp32 (min cosine ≥ 0.999; pipeline.extract.precision, decision
  cached per machine and model); `true` / `false` force bf16 / fp32. The precision is resolved
  lazily, on the first forward pass or `meta()`, so a fully cached run costs at most a read of the
  decision file. The table's metadata records it (`params.precision`, and the notes say whether it
  was measured or forced).
* Precision and the per-clip cache key: under `auto` the key leaves the precision out. Both paths
  agree within the tested tolerance, so a clip cached by either is valid, and the choice (which
  depends on the machine, even on torch's thread count) does not re-extract a corpus; a table can
  then hold clips of both precisions if the decision changed between runs (its metadata names the
  precision of this run). Forced `true` / `false` are params like any other and part of the key.
* Weights: a local file named in params (its sha256 goes into params, so a file replaced under the
  same path invalidates the cache) or `random`: seeded random weights, and the FeatureMeta says so.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from pipeline.core.config import ConfigError
from pipeline.core.device import pick_device
from pipeline.core.features import ClipFeatures, FeatureMeta
from pipeline.corpus.manifest import Clip
from pipeline.extract import precision as precision_chooser
from pipeline.extract.base import ExtractionError, Extractor, file_digest
from pipeline.extract.cache import config_key
from pipeline.extract.faces.table import ClipDetections
from pipeline.extract.runner import batched

INPUT_SIZE = 224
#: crops in the batch the precision chooser times (a few seconds for VGG-Face on one thread)
PROBE_CROPS = 2
#: params that change no output value (left out of the cache key)
NOT_IN_KEY = ("on_error",)

#: a clip's detections by clip id: a mapping, or a callable returning None for an unknown clip
Detections = Mapping[str, ClipDetections] | Callable[[str], ClipDetections | None]


def preprocess(crops: np.ndarray | list[np.ndarray], mean_rgb: tuple[float, float, float], size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB crops → (N, 3, size, size) float32 in 0–255 minus `mean_rgb`, in
    channels-last memory layout. Crops of another size are resized (bilinear)."""
    crops = [c if c.shape[:2] == (size, size) else np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)  # a channels-last view, no copy
    return x.float() - torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------------


def missing_weights(section: str, path: Path, expected: str) -> ConfigError:
    return ConfigError(
        f"{section}.weights: weights file {path} not found (looked for {path.resolve()}); provide "
        f"{expected}, or set {section}.weights: random"
    )


def load_torch_state(path: Path, section: str, expected: str) -> dict[str, torch.Tensor]:
    """The state dict of tensors in a torch.save file (bare, or under 'state_dict' /
    'model_state_dict'); ConfigError naming the file and what was expected otherwise."""
    if not path.is_file():
        raise missing_weights(section, path, expected)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or corrupt files
        raise ConfigError(f"{section}.weights: {path} is not a loadable PyTorch state dict ({e}); expected {expected}") from None
    return unwrap_state(obj, path, section, expected)


def unwrap_state(obj: Any, path: Path, section: str, expected: str) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{section}.weights: {path} does not hold a state dict of tensors; expected {expected}")
    return obj


def check_state(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    path: Path,
    section: str,
    layout: str,
    optional: Iterable[str] = (),
) -> None:
    """Strict key and shape check: every tensor of the file is used and every one the network needs
    is there (`optional` keys may be absent, e.g. BatchNorm's num_batches_tracked)."""
    optional = set(optional)
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"{section}.weights: {path} does not match the {layout} layout; missing keys: {missing or 'none'}; "
            f"unexpected keys: {unexpected or 'none'}"
        )
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items() if k in state and state[k].shape != s]
    if bad:
        raise ConfigError(f"{section}.weights: {path}: wrong tensor shapes for the {layout} layout: {'; '.join(bad)}")


# --------------------------------------------------------------------------------------------------
# The extractor
# --------------------------------------------------------------------------------------------------


class FaceCropEmbedder(Extractor):
    """One embedding per step of the faces table; steps without a face are present=False rows. A
    clip the faces stage skipped (on_error=skip, logged in data/errors/faces.csv) gets no rows (face
    missing for the whole clip); a clip the table does not know is an ExtractionError."""

    modality = "video"
    batch_clips = 16

    #: RGB mean subtracted from 0–255 input
    mean_rgb: ClassVar[tuple[float, float, float]]
    #: network family, for notes ("VGG-Face", …)
    family: ClassVar[str]
    #: in fp32 on a CPU, a forward pass takes this many crops at most (None: params.batch_size); a fixed
    #: rule, never timed per run, so a table's bytes depend on the settings and the precision only
    cpu_fp32_pass: ClassVar[int | None] = None
    #: how 'random' weights are drawn, for notes
    random_init: ClassVar[str]

    def __init__(
        self,
        params: Any,
        detections: Detections,
        faces_meta: Mapping[str, Any],
        device: str | torch.device | None = None,
        source: str = "face detections",
    ):
        """`detections` and `faces_meta`: what `read_detections` gives (clip id → ClipDetections,
        and the table's `mer` metadata: rate_hz, skipped clips, provenance); `source` names where
        they came from in error messages (the table's path)."""
        self.settings = params
        self.source = str(source)
        self.faces_meta = dict(faces_meta)
        self._lookup = detections.get if isinstance(detections, Mapping) else detections
        self.rate_hz = float(self.faces_meta["rate_hz"])
        self.device = pick_device(device)
        self.net = self.build_network().eval().to(self.device)
        self.dim = self.embedding_dim()
        self.weights_sha256 = None if self.settings.weights == "random" else file_digest(Path(self.settings.weights))
        self._precision: str | None = None
        self._fast_net: nn.Module | None = None
        #: how the precision was chosen (a Decision when measured or read from the decision file)
        self.precision_decision: precision_chooser.Decision | None = None

    # -- what a subclass provides ----------------------------------------------------------------

    @abstractmethod
    def build_network(self) -> nn.Module:
        """The fp32 network from self.settings (weights file or 'random'); forward: (N, 3, 224, 224)
        preprocessed crops → (N, dim). Raises ConfigError for unusable weights."""

    @abstractmethod
    def embedding_dim(self) -> int: ...

    @abstractmethod
    def layer(self) -> str:
        """Which layer the embedding is, in words (params and notes)."""

    @abstractmethod
    def backbone_name(self) -> str: ...

    def fold(self, net: nn.Module) -> nn.Module:
        """`net` (a copy) with inference-time simplifications that keep its function (BN folding)."""
        return net

    # -- identity --------------------------------------------------------------------------------

    @property
    def pretrained(self) -> bool:
        return self.settings.weights != "random"

    def backbone(self) -> tuple[str, bool]:
        return self.backbone_name(), self.pretrained

    def params(self) -> dict[str, Any]:
        return {
            **self.settings.model_dump(mode="json"),
            "layer": self.layer(),
            "precision": self.precision,  # resolves an `auto` setting (measures, or reads the decision)
            "weights_sha256": self.weights_sha256,
            "faces": {k: self.faces_meta.get(k) for k in ("detector", "version", "stage_version", "params", "selection", "track", "detect_every", "downscale", "crop")},
        }

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        how = self.precision_note()
        if self.pretrained:
            meta.notes = f"{self.family} {self.layer()} from {Path(self.settings.weights).name} on MTCNN face crops ({how})"
        else:
            meta.notes = (
                f"RANDOM {self.family} weights (seed {self.settings.seed}, {self.random_init}), not the pretrained "
                f"{self.family}: {self.layer()} of an untrained network; for testing the pipeline only ({how})"
            )
        return meta

    def precision_note(self) -> str:
        """The precision and how it was chosen, without timings (they vary from run to run and
        would make the table's bytes differ where its values do not)."""
        if self.settings.bf16 != "auto":
            return f"{self.precision}, forced by {self.section}.bf16: {str(self.settings.bf16).lower()}"
        d = self.precision_decision
        if d is not None and d.reason.startswith("measured"):
            return f"{self.precision}, chosen by measurement: faster on this machine, min cosine to fp32 ≥ {precision_chooser.MIN_COSINE}"
        return f"{self.precision}, chosen by measurement: {d.reason if d else 'fp32'}"

    def config_fingerprint(self) -> str:
        """The base key without the faces stage's provenance (the crops themselves are in the input
        key), without params that change no output (NOT_IN_KEY), and, under `bf16: auto`, without the
        precision (see the module docstring); computing it never measures anything."""
        backbone, pretrained = self.backbone()
        params = {**self.settings.model_dump(mode="json"), "layer": self.layer(), "weights_sha256": self.weights_sha256}
        if self.settings.bf16 != "auto":
            params["precision"] = self.precision
        params = {k: v for k, v in params.items() if k not in NOT_IN_KEY}
        return config_key(type(self).__name__, self.name, self.version, self.dim, self.rate_hz, backbone, pretrained, params)

    def input_fingerprint(self, clip: Clip, root: Path) -> str:
        """Hash of the clip's detection rows (t, present, crop bytes), or of its skip reason."""
        h = hashlib.sha256()
        det = self._lookup(clip.clip_id)
        if det is not None:
            h.update(np.ascontiguousarray(det.t, np.float64).tobytes())
            h.update(np.ascontiguousarray(det.present, bool).tobytes())
            for blob in det.crops:
                h.update(b"-" if blob is None else len(blob).to_bytes(8, "little") + blob)
        else:  # skipped by the faces stage, or unknown (then process_clips raises; errors are not cached)
            h.update(repr(("skipped", self.faces_meta.get("skipped", {}).get(clip.clip_id, clip.clip_id))).encode())
        return h.hexdigest()

    # -- computing -------------------------------------------------------------------------------

    def preprocess(self, crops: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB crops → the fp32 network input (N, 3, 224, 224)."""
        return preprocess(crops, self.mean_rgb)

    #: the params.yaml section (notes, logs)
    section: ClassVar[str]

    @property
    def precision(self) -> str:
        """'bf16' or 'fp32': forced by params.bf16, or under `auto` measured on this machine at
        first use (pipeline.extract.precision; the decision is cached per machine and model)."""
        if self._precision is None:
            self._resolve_precision()
        return self._precision

    @property
    def fast_net(self) -> nn.Module:
        """The inference copy of `net` in the chosen precision."""
        if self._fast_net is None:
            self._fast_net = self._inference_copy(self.precision)
        return self._fast_net

    def _resolve_precision(self) -> None:
        setting = self.settings.bf16
        if setting != "auto":
            self._precision = "bf16" if setting else "fp32"
            return
        copies: dict[str, nn.Module] = {}
        probe = self.preprocess(np.random.default_rng(0).integers(0, 256, (PROBE_CROPS, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))

        def run(p: str) -> np.ndarray:
            if p not in copies:
                copies[p] = self._inference_copy(p)
            return self._run(copies[p], p, probe)

        weights = self.weights_sha256 or f"random:{self.settings.seed}"
        identity = {
            "machine": precision_chooser.machine_identity(self.device),
            "model": precision_chooser.model_identity(self.net, layer=self.layer(), weights=weights, probe=PROBE_CROPS),
        }
        decision = precision_chooser.choose_precision(
            run, identity, pilot=precision_chooser.conv_pilot(self.device),
            log=lambda line: print(f"{self.name}: precision {line}", file=sys.stderr, flush=True),
        )
        self.precision_decision, self._precision = decision, decision.precision
        self._fast_net = copies.get(decision.precision)  # reuse the copy that was timed, if any

    def _inference_copy(self, precision: str) -> nn.Module:
        if precision == "fp32" and type(self).fold is FaceCropEmbedder.fold:
            return self.net.to(memory_format=torch.channels_last)  # nothing would change: share it
        net = self.fold(copy.deepcopy(self.net)).to(memory_format=torch.channels_last)
        return net.to(torch.bfloat16) if precision == "bf16" else net

    def embed(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops → (N, dim) float32 embeddings, in forward passes of
        params.batch_size, in the extractor's precision."""
        out = np.zeros((len(crops), self.dim), np.float32)
        for s in range(0, len(crops), self.settings.batch_size):
            out[s : s + self.settings.batch_size] = self._forward(crops[s : s + self.settings.batch_size])
        return out

    def _forward(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        x = self.preprocess(crops)
        step = self.cpu_fp32_pass if self.precision == "fp32" and self.device.type == "cpu" else None
        if step is None or step >= len(x):
            return self._run(self.fast_net, self.precision, x)
        return np.concatenate([self._run(self.fast_net, self.precision, x[i : i + step]) for i in range(0, len(x), step)])

    def _run(self, net: nn.Module, precision: str, x: torch.Tensor) -> np.ndarray:
        """`net` (an inference copy in `precision`) on preprocessed crops `x` → float32 numpy."""
        bf16 = precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = x.to(self.device, torch.bfloat16 if bf16 else torch.float32, memory_format=torch.channels_last)
            return net(x).float().cpu().numpy()

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        [(_, result)] = list(self.process_clips([clip], root))
        if isinstance(result, Exception):
            raise result
        return result

    def process_clips(self, clips: Iterable[Clip], root: Path) -> Iterator[tuple[Clip, ClipFeatures | Exception]]:
        """Each clip's present crops in forward passes of batch_size crops of that clip alone (so its
        embeddings do not depend on the other clips); crops are decoded batch by batch, so memory
        stays flat in clip length. A clip whose crop does not decode or whose embedding is not
        finite gets its ExtractionError; the other clips are unaffected."""
        for clip in clips:
            try:
                yield clip, self._embed_clip(clip)
            except ExtractionError as e:
                yield clip, e

    def _embed_clip(self, clip: Clip) -> ClipFeatures:
        det = self._clip_detections(clip.clip_id)
        values = np.zeros((len(det), self.dim), np.float32)
        for batch in batched(np.flatnonzero(det.present).tolist(), self.settings.batch_size):
            crops = []
            for i in batch:
                try:
                    crops.append(det.crop(i))
                except Exception as e:  # PIL raises several types for corrupt JPEG data
                    raise ExtractionError(
                        f"{self.source}: clip {clip.clip_id}: crop at t={det.t[i]:.3f} s does not decode ({e})"
                    ) from None
            values[batch] = self._forward(crops)
        if not np.all(np.isfinite(values)):
            raise ExtractionError(f"{clip.media_path}: non-finite {self.family} features (clip {clip.clip_id})")
        return ClipFeatures(det.t, det.present, values)

    def _clip_detections(self, clip_id: str) -> ClipDetections:
        det = self._lookup(clip_id)
        if det is not None:
            return det
        if clip_id in self.faces_meta.get("skipped", {}):
            # faces ran with on_error=skip and recorded why in data/errors/faces.csv: the face
            # modality is missing for the whole clip, which a feature table expresses as "no rows"
            return ClipDetections.empty()
        raise ExtractionError(
            f"{self.source}: no detections for clip {clip_id}; the table was made for another "
            f"manifest — rerun the faces stage"
        )
