"""VGG-Face fc6 embeddings of the face crops (001 §4.2.1, 002 §3.2.1: the first fully connected
layer, 4,096-d), one per detection step of the `faces` stage.

The network is VGG-Face (Parkhi et al. 2015; VGG16 layout), with its layers named as in the common
PyTorch conversion `vgg_face_dag.pth` (module `Vgg_face_dag`): conv1_1 … conv5_3, fc6, fc7, fc8, so
that conversion's state dict loads with a strict key check. Its input is 224×224 RGB in 0–255 minus
the mean [129.186, 104.762, 93.594] (the conversion's `meta`; no scaling by a std). fc7 and fc8 exist
only so the state dict loads strictly; the forward pass stops at fc6.

The papers are silent on pre/post activation: fc6 here is the Linear output before its ReLU (the
layer's own response, sign kept); `relu=True` (constructor only) gives max(fc6, 0) instead.

Where the papers differ: 001 fine-tunes VGG-Face on AffectNet and feeds [-1, 1] pixels to its own
model; 002 uses 96×96 crops. Neither fine-tuned model is public, so this takes the original VGG-Face
with its own preprocessing; `face_embed.weights` may point at any state dict with the same layout.

`face_embed.weights: random` builds seeded random weights (torchvision's VGG initialisation), so the
pipeline runs where the real weights cannot be had; the feature table then says RANDOM in its
FeatureMeta (pretrained=False, notes) and in every output that repeats its weights statement.

Precision: bf16 autocast (`face_embed.bf16`, see pipeline.extract.device) where the hardware runs
bf16 natively; measured on real CREMA-D crops: cosine(bf16, fp32) >= 0.9999 (random weights).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from pipeline.config import FACES, ConfigError, FaceEmbedParams
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.device import autocast_context, pick_device, precision
from pipeline.extract.faces import ClipDetections, read_detections
from pipeline.store import ClipFeatures, FeatureMeta

#: the vgg_face_dag.pth conversion's meta: RGB mean in 0–255, input side
MEAN_RGB = (129.186, 104.762, 93.594)
INPUT_SIZE = 224
FC6_DIM = 4096
N_IDENTITIES = 2622  # fc8: the VGG-Face training identities
BACKBONE = "VGG-Face (VGG16) fc6"
WEIGHTS_FORMAT = (
    "a PyTorch state dict with the layer names of the Oxford VGG-Face PyTorch conversion "
    "(vgg_face_dag.pth, module Vgg_face_dag: conv1_1.weight … conv5_3.bias, fc6/fc7/fc8.weight/bias), "
    "bare or nested under 'state_dict'"
)

#: output channels of the convolutions of each block (VGG16 "D" configuration)
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VggFaceDag(nn.Module):
    """VGG-Face with `Vgg_face_dag`'s parameter names; forward returns fc6 (N, 4096).

    The parameters start at zero (not PyTorch's default init, which would cost a second and draw
    from the global RNG): fill them with `init_random(seed)` or `load_state_dict`."""

    def __init__(self, relu: bool = False):
        super().__init__()
        self.relu = relu
        with torch.device("meta"):  # shapes only; no default initialisation
            in_ch = 3
            for b, widths in enumerate(BLOCKS, start=1):
                for i, out_ch in enumerate(widths, start=1):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1))
                    in_ch = out_ch
            self.fc6 = nn.Linear(512 * 7 * 7, FC6_DIM)
            self.fc7 = nn.Linear(FC6_DIM, FC6_DIM)
            self.fc8 = nn.Linear(FC6_DIM, N_IDENTITIES)
        self.to_empty(device="cpu")
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def convs(self) -> list[nn.Conv2d]:
        return [getattr(self, f"conv{b}_{i}") for b, widths in enumerate(BLOCKS, 1) for i in range(1, len(widths) + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 224, 224) RGB in 0–255 minus MEAN_RGB."""
        for b, widths in enumerate(BLOCKS, start=1):
            for i in range(1, len(widths) + 1):
                x = torch.relu(getattr(self, f"conv{b}_{i}")(x))
            x = self.pool(x)
        x = self.fc6(torch.flatten(x, 1))  # (C, H, W) order, as the conversion flattens
        return torch.relu(x) if self.relu else x

    def init_random(self, seed: int) -> None:
        """torchvision's VGG initialisation, drawn from a generator seeded with `seed` (the global
        RNG is untouched): conv kaiming_normal (fan_out, relu), Linear normal(0, 0.01), biases zero."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs():
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=g)
                nn.init.zeros_(conv.bias)
            for fc in (self.fc6, self.fc7, self.fc8):
                nn.init.normal_(fc.weight, 0.0, 0.01, generator=g)
                nn.init.zeros_(fc.bias)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in `path` (bare or under 'state_dict'); ConfigError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"face_embed.weights: weights file {path} not found (looked for {path.resolve()}); provide "
            f"{WEIGHTS_FORMAT}, or set face_embed.weights: random"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or corrupt files
        raise ConfigError(
            f"face_embed.weights: {path} is not a loadable PyTorch state dict ({e}); expected {WEIGHTS_FORMAT}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"face_embed.weights: {path} does not hold a state dict of tensors; expected {WEIGHTS_FORMAT}")
    return obj


def build_network(weights: str, seed: int = 0, relu: bool = False) -> VggFaceDag:
    """VGG-Face (eval mode) from a state dict file (strict key and shape check) or, for
    weights='random', seeded random weights."""
    net = VggFaceDag(relu=relu)
    if weights == "random":
        net.init_random(seed)
        return net.eval()
    state = load_state_dict_file(weights)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"face_embed.weights: {weights} does not match the VGG-Face layout; "
            f"missing keys: {missing or 'none'}; unexpected keys: {unexpected or 'none'}; expected {WEIGHTS_FORMAT}"
        )
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise ConfigError(f"face_embed.weights: {weights}: wrong tensor shapes: {'; '.join(bad)}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB crops → (N, 3, 224, 224) float32, 0–255 minus MEAN_RGB. Crops of
    another size (faces.crop_size != 224) are resized (bilinear)."""
    if crops.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        crops = np.stack([np.asarray(Image.fromarray(c).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)) for c in crops])
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return x - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)


class VggFaceExtractor(Extractor):
    """fc6 of VGG-Face for every step of the faces table; steps without a face are present=False
    rows. A clip the faces stage skipped (on_error=skip, logged in data/errors/faces.csv) gets no
    rows (face missing for the whole clip); a clip the table does not know is an ExtractionError."""

    name = "vggface"
    version = "1"
    modality = "video"

    def __init__(
        self,
        params: FaceEmbedParams,
        detections: str | Path = FACES,
        device: str | torch.device | None = None,
        relu: bool = False,
    ):
        self.settings = params
        self.detections_path = Path(detections)
        self.faces_meta, self.detections = read_detections(self.detections_path)  # loaded once
        self.dim = FC6_DIM
        self.rate_hz = float(self.faces_meta["rate_hz"])
        self.device = pick_device(device)
        self.relu = relu
        self.net = build_network(params.weights, params.seed, relu=relu).to(self.device)
        self.precision = precision(self.device, params.bf16)
        self.weights_sha256 = None if params.weights == "random" else _sha256(Path(params.weights))

    @property
    def pretrained(self) -> bool:
        return self.settings.weights != "random"

    def backbone(self) -> tuple[str, bool]:
        return BACKBONE, self.pretrained

    def params(self) -> dict[str, Any]:
        return {
            **self.settings.model_dump(mode="json"),
            "layer": "fc6 (after ReLU)" if self.relu else "fc6 (Linear output, before ReLU)",
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
            "faces": {k: self.faces_meta.get(k) for k in ("detector", "version", "params", "selection", "crop")},
        }

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        if self.pretrained:
            meta.notes = f"VGG-Face fc6 from {Path(self.settings.weights).name} on MTCNN face crops ({self.precision})"
        else:
            meta.notes = (
                f"RANDOM VGG-Face weights (seed {self.settings.seed}, torchvision VGG initialisation), not the "
                f"pretrained VGG-Face: fc6 of an untrained network; for testing the pipeline only"
            )
        return meta

    def embed(self, crops: np.ndarray, progress: bool = False) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops → (N, 4096) float32 fc6, in batches of params.batch_size."""
        out = np.zeros((len(crops), FC6_DIM), np.float32)
        bs = self.settings.batch_size
        with torch.inference_mode(), autocast_context(self.device, self.settings.bf16):
            for s in tqdm(range(0, len(crops), bs), desc="vggface", unit="batch", disable=not progress, leave=False):
                x = preprocess(crops[s : s + bs]).to(self.device)
                out[s : s + bs] = self.net(x).float().cpu().numpy()
        return out

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        det = self._clip_detections(clip.clip_id)
        values = np.zeros((len(det), FC6_DIM), np.float32)
        idx = np.flatnonzero(det.present)
        if len(idx):
            crops = []
            for i in idx:
                try:
                    crops.append(det.crop(int(i)))
                except Exception as e:  # PIL raises several types for corrupt JPEG data
                    raise ExtractionError(
                        f"{self.detections_path}: clip {clip.clip_id}: crop at t={det.t[i]:.3f} s does not decode ({e})"
                    ) from None
            values[idx] = self.embed(np.stack(crops))
            if not np.all(np.isfinite(values[idx])):
                raise ExtractionError(f"{clip.media_path}: non-finite VGG-Face features (clip {clip.clip_id})")
        return ClipFeatures(det.t, det.present, values)

    def _clip_detections(self, clip_id: str) -> ClipDetections:
        if clip_id in self.detections:
            return self.detections[clip_id]
        if clip_id in self.faces_meta.get("skipped", {}):
            # faces ran with on_error=skip and recorded why in data/errors/faces.csv: the face
            # modality is missing for the whole clip, which a feature table expresses as "no rows"
            return ClipDetections.empty()
        raise ExtractionError(
            f"{self.detections_path}: no detections for clip {clip_id}; the table was made for another "
            f"manifest — rerun the faces stage"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
