"""ResNet-50 trained on VGGFace2, global-average-pooled, on the face crops (003 §5.2.3), one row per
detection step of the `faces` stage.

003 §5.2.3: faces at 5 Hz (the faces stage's default rate), "a ResNet50 model fine-tuned on VGGFace2"
(its footnote: cydonia999/VGGFace2-pytorch, i.e. the VGGFace2 authors' Caffe `resnet50_ft`: pretrained
on MS-Celeb-1M, fine-tuned on VGGFace2), "global average pooling applied on the output of the last
convolution layer". That is `layer: pool5`, 2,048-d, what the cited repository's extractor returns.

The paper then states d_v = 512, which no released ResNet-50/VGGFace2 model gives at that layer (the
VGGFace2 authors released 2,048-d models and 128-d/256-d embedding variants, none of 512). The only
512-channel maps of these weights are the bottlenecks' 3×3 convolutions of stage 5, so `layer:
conv5_3_3x3` gives the global average of the last of them (after its BN and ReLU), 512-d: our reading
of "the last convolution layer" that matches the stated size, not something the paper confirms.

One network, torchvision's ResNet-50 in the Caffe layout of the VGGFace2 models (`ResNet50Face`):
the stride-2 of stages 3–5 sits on the first 1×1 convolution of the block (and its projection), not on
the 3×3 as in torchvision's "v1.5"; the stem max-pool is 3×3/2 without padding, ceil mode; BN eps 1e-5;
convolutions without bias. It loads the two formats users have, strictly (every tensor used, every
parameter given; only BN's num_batches_tracked may be absent):

* `dag`: the Oxford PyTorch conversion `resnet50_ft_dag.pth` (module `Resnet50_ft_dag`, S. Albanie's
  MatConvNet import): conv1_7x7_s2, conv1_7x7_s2_bn, conv{2..5}_{b}_1x1_reduce / _3x3 / _1x1_increase /
  _1x1_proj (+ `_bn`), classifier (a 1×1 convolution to the 8,631 identities). RGB input.
* `vggface2_pytorch`: the VGGFace2-pytorch pickle `resnet50_ft_weight.pkl` (dict name → numpy array,
  torchvision names conv1, bn1, layer1.0.conv1 … fc; loaded there by `utils.load_state_dict`), or the
  same names in a torch.save file. Converted from Caffe, it takes BGR input: its conv1 filters are
  reordered to RGB on loading, so both formats take the same input.

Input (both conversions' meta): 224×224 RGB in 0–255 minus the mean [131.0912, 103.8827, 91.4953]
(VGGFace2-pytorch: mean_bgr [91.4953, 103.8827, 131.0912]), no std. The paper aligns faces with
OpenFace; this pipeline crops with MTCNN (faces stage), as the VGGFace2 authors' own evaluation does.

The pickle is read with an unpickler that builds numpy arrays and nothing else, so a hostile file
cannot run code. `resnet50.weights: random`: seeded random weights (torchvision's ResNet
initialisation), flagged RANDOM in the FeatureMeta like `vggface`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import Bottleneck, ResNet

from pipeline.core.config import ConfigError
from pipeline.extract.face_embed import (
    FaceCropEmbedder,
    check_state,
    missing_weights,
    unwrap_state,
)
from pipeline.extract.params import ResNet50Params

SECTION = "resnet50"
#: both conversions' meta: RGB mean in 0–255
MEAN_RGB = (131.0912, 103.8827, 91.4953)
N_IDENTITIES = 8631  # the VGGFace2 training identities (classifier / fc)
LAYERS = (3, 4, 6, 3)  # bottlenecks per stage (ResNet-50)
DIMS = {"pool5": 2048, "conv5_3_3x3": 512}
Layer = Literal["pool5", "conv5_3_3x3"]
FORMATS = {
    "dag": "resnet50_ft_dag.pth-style state dict (Oxford conversion, module Resnet50_ft_dag: conv1_7x7_s2, "
    "conv2_1_1x1_reduce, …, conv5_3_1x1_increase_bn, classifier)",
    "vggface2_pytorch": "VGGFace2-pytorch pickle resnet50_ft_weight.pkl (dict of numpy arrays named conv1, bn1, "
    "layer1.0.conv1, …, fc; or the same names in a torch.save file)",
}
EXPECTED = " or a ".join(FORMATS.values())


class ResNet50Face(ResNet):
    """torchvision's ResNet-50 in the Caffe layout of the VGGFace2 models; forward returns the
    global average of `layer` (N, 2048 for pool5; N, 512 for conv5_3_3x3).

    State dict names are torchvision's (= VGGFace2-pytorch's). The parameters start at zero (running
    variances at one), not at torchvision's random init, which would cost time and draw from the
    global RNG: fill them with `init_random(seed)` or `load_state_dict`."""

    def __init__(self, num_classes: int = N_IDENTITIES, layer: Layer = "pool5"):
        with torch.device("meta"):  # shapes only
            super().__init__(Bottleneck, list(LAYERS), num_classes=num_classes)
        self.to_empty(device="cpu")
        with torch.no_grad():
            for t in self.state_dict().values():
                t.zero_()
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.fill_(1.0)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)  # Caffe pool1
        for stage in (self.layer2, self.layer3, self.layer4):  # Caffe: stride on the first 1×1
            stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 224, 224) RGB in 0–255 minus MEAN_RGB."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layer == "pool5":
            x = self.layer4(x)
        else:  # the last bottleneck up to its 3×3 convolution (+ BN, ReLU)
            x = self.layer4[1](self.layer4[0](x))
            b = self.layer4[2]
            x = b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x))))))
        return torch.flatten(self.avgpool(x), 1)

    def init_random(self, seed: int) -> None:
        """torchvision's ResNet initialisation drawn from a generator seeded with `seed` (the global
        RNG is untouched): conv kaiming_normal (fan_out, relu), BN weight 1 / bias 0, fc N(0, 0.01)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
            nn.init.normal_(self.fc.weight, 0.0, 0.01, generator=g)


def dag_names() -> dict[str, str]:
    """resnet50_ft_dag module name → torchvision module name."""
    names = {"conv1_7x7_s2": "conv1", "conv1_7x7_s2_bn": "bn1", "classifier": "fc"}
    parts = {"1x1_reduce": ("conv1", "bn1"), "3x3": ("conv2", "bn2"), "1x1_increase": ("conv3", "bn3"),
             "1x1_proj": ("downsample.0", "downsample.1")}
    for stage, blocks in enumerate(LAYERS, start=2):
        for b in range(1, blocks + 1):
            for part, (conv, bn) in parts.items():
                if part == "1x1_proj" and b > 1:
                    continue
                names[f"conv{stage}_{b}_{part}"] = f"layer{stage - 1}.{b - 1}.{conv}"
                names[f"conv{stage}_{b}_{part}_bn"] = f"layer{stage - 1}.{b - 1}.{bn}"
    return names


def from_dag(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A resnet50_ft_dag state dict under torchvision names (the classifier's 1×1 convolution
    becomes fc's matrix). Keys it does not know are kept as they are (the strict check names them)."""
    names = dag_names()
    out = {}
    for key, value in state.items():
        module, _, suffix = key.rpartition(".")
        if module in names:
            key = f"{names[module]}.{suffix}"
            if module == "classifier" and suffix == "weight":
                value = value.flatten(1)
        out[key] = value
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts of numpy arrays, nothing else (no arbitrary callables from the file)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")
        return super().find_class(module, name)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save file or of a pickle of numpy arrays."""
    if not path.is_file():
        raise missing_weights(SECTION, path, EXPECTED)
    errors = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or corrupt files
        errors.append(f"torch.load: {e}")
        try:
            with open(path, "rb") as f:
                obj = _ArrayUnpickler(f, encoding="latin1").load()
        except Exception as e2:
            errors.append(f"pickle: {e2}")
            raise ConfigError(
                f"{SECTION}.weights: {path} is neither a PyTorch state dict nor a pickle of numpy arrays "
                f"({'; '.join(errors)}); expected a {EXPECTED}"
            ) from None
    if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        obj = {k: torch.from_numpy(np.array(v)) for k, v in obj.items()}
    return unwrap_state(obj, path, SECTION, f"a {EXPECTED}")


def detect_format(state: dict[str, torch.Tensor], path: Path) -> str:
    if any(k.startswith("conv1_7x7_s2") for k in state):
        return "dag"
    if "conv1.weight" in state or any(k.startswith("layer1.") for k in state):
        return "vggface2_pytorch"
    raise ConfigError(
        f"{SECTION}.weights: {path}: unknown layout (keys such as {sorted(state)[:4]}); expected a {EXPECTED}; "
        f"or set {SECTION}.format"
    )


def build_network(weights: str, seed: int = 0, layer: Layer = "pool5", fmt: str = "auto") -> ResNet50Face:
    """ResNet50Face (eval mode) from a weights file in either format (strict key and shape check;
    `fmt` 'auto' tells them apart by their key names) or, for weights='random', seeded random weights."""
    if weights == "random":
        net = ResNet50Face(layer=layer)
        net.init_random(seed)
        return net.eval()
    path = Path(weights)
    state = read_weights(path)
    found = detect_format(state, path)
    if fmt not in ("auto", found):
        raise ConfigError(f"{SECTION}.weights: {path} has the key names of the {found} format, not of {fmt} ({SECTION}.format)")
    if found == "dag":
        state = from_dag(state)
    elif "conv1.weight" in state:  # Caffe BGR filters → RGB input
        state["conv1.weight"] = state["conv1.weight"].flip(1)
    classes = state["fc.weight"].shape[0] if "fc.weight" in state and state["fc.weight"].ndim == 2 else N_IDENTITIES
    net = ResNet50Face(num_classes=classes, layer=layer)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    optional = [k for k in expected if k.endswith("num_batches_tracked")]
    check_state(state, expected, path, SECTION, f"ResNet-50 ({FORMATS[found]})", optional=optional)
    net.load_state_dict(state, strict=False)  # strictness checked above (num_batches_tracked may be absent)
    return net.eval()


def fold_batchnorm(net: ResNet50Face) -> ResNet50Face:
    """`net` with every BatchNorm folded into the convolution before it (in place; eval mode)."""
    net.conv1, net.bn1 = fuse_conv_bn_eval(net.conv1, net.bn1), nn.Identity()
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for b in stage:
            for i in (1, 2, 3):
                conv, bn = getattr(b, f"conv{i}"), getattr(b, f"bn{i}")
                setattr(b, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(b, f"bn{i}", nn.Identity())
            if b.downsample is not None:
                b.downsample = fuse_conv_bn_eval(b.downsample[0], b.downsample[1])
    return net


class ResNet50Extractor(FaceCropEmbedder):
    """Global-average-pooled ResNet-50 (VGGFace2) features for every step of the faces table."""

    name = "resnet50"
    section = SECTION
    version = "1"
    mean_rgb = MEAN_RGB
    family = "ResNet-50 (VGGFace2)"
    random_init = "torchvision ResNet initialisation"

    settings: ResNet50Params

    def build_network(self) -> ResNet50Face:
        s = self.settings
        return build_network(s.weights, s.seed, layer=s.layer, fmt=s.format)

    def embedding_dim(self) -> int:
        return DIMS[self.settings.layer]

    def layer(self) -> str:
        if self.settings.layer == "pool5":
            return "pool5: global average of the last block's output (conv5_3), 2048-d"
        return "global average of conv5_3_3x3 (after BN+ReLU), 512-d"

    def backbone_name(self) -> str:
        return f"ResNet-50 (VGGFace2) {self.settings.layer}"

    def fold(self, net: nn.Module) -> nn.Module:
        return fold_batchnorm(net)
