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

Reading the faces table, batching crops (within each clip), the cache key and precision are shared with
`resnet50` (pipeline.extract.face_embed.FaceCropEmbedder). Precision (`face_embed.bf16`): `auto`
times fp32 and bf16 on this machine once and keeps the faster one that agrees with fp32 (min cosine
0.999; bf16 ran 0.65x fp32 on an AVX512-BF16 Xeon without AMX, 3-4x with AMX); measured on real
CREMA-D crops: cosine(bf16, fp32) >= 0.999 (random weights; tests/test_vggface.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.extract import face_embed
from pipeline.extract.face_embed import (
    Detections,
    FaceCropEmbedder,
    check_state,
    load_torch_state,
)
from pipeline.extract.params import FaceEmbedParams

#: the vgg_face_dag.pth conversion's meta: RGB mean in 0–255, input side
MEAN_RGB = (129.186, 104.762, 93.594)
SECTION = "face_embed"  # params.yaml section
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


def build_network(weights: str, seed: int = 0, relu: bool = False) -> VggFaceDag:
    """VGG-Face (eval mode) from a state dict file (strict key and shape check) or, for
    weights='random', seeded random weights."""
    net = VggFaceDag(relu=relu)
    if weights == "random":
        net.init_random(seed)
        return net.eval()
    path = Path(weights)
    state = load_torch_state(path, SECTION, WEIGHTS_FORMAT)
    check_state(state, {k: v.shape for k, v in net.state_dict().items()}, path, SECTION, "VGG-Face (vgg_face_dag)")
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB crops → (N, 3, 224, 224) float32, 0–255 minus MEAN_RGB (crops of
    another size are resized, bilinear)."""
    return face_embed.preprocess(crops, MEAN_RGB)


class VggFaceExtractor(FaceCropEmbedder):
    """fc6 of VGG-Face for every step of the faces table (FaceCropEmbedder does the rest)."""

    name = "vggface"
    section = SECTION
    version = "2"  # 2: bf16 runs with bf16 weights (was: fp32 weights under autocast); crops batched across clips
    mean_rgb = MEAN_RGB
    family = "VGG-Face"
    random_init = "torchvision VGG initialisation"
    # fp32 on a CPU: one crop per pass. Its early convolutions' outputs (64 × 224² floats per crop) outgrow
    # the caches in a batch: one thread, channels-last, img/s at 1 · 4 · 16 crops per pass: 6.81 · 6.20 ·
    # 5.88 (AMD EPYC, AVX-512) and 3.83 · 3.46 · 3.32 (same, kernels pinned to AVX2), 2026-12-07.
    # ResNet-50's smaller activations gain from batching, so it keeps params.batch_size.
    cpu_fp32_pass = 1

    def __init__(
        self,
        params: FaceEmbedParams,
        detections: Detections,
        faces_meta: dict[str, Any],
        device: str | torch.device | None = None,
        relu: bool = False,
        source: str = "face detections",
    ):
        self.relu = relu
        super().__init__(params, detections, faces_meta, device=device, source=source)

    def build_network(self) -> VggFaceDag:
        return build_network(self.settings.weights, self.settings.seed, relu=self.relu)

    def embedding_dim(self) -> int:
        return FC6_DIM

    def layer(self) -> str:
        return "fc6 (after ReLU)" if self.relu else "fc6 (Linear output, before ReLU)"

    def backbone_name(self) -> str:
        return BACKBONE
