"""The custom 1-D CNN physiological backbone of Waligora et al. (JMT, seed 004, §4.2 Table 1).

Table 1 (BioVid EDA, one window of 2,816 samples):

    input 2816×1 → Conv(32, k5, s2) 1406×32 → ReLU → MaxPool(2) 703×32
                 → Conv(64, k5, s1) 699×64  → ReLU → MaxPool(2) 349×64
                 → FC 512 → ReLU → FC 2

"The CNN outputs a 512-dimensional feature vector" (§4.2): the 512-d ReLU output of the first FC layer
is the feature the fusion model reads; the second FC layer (2 pain classes) exists only to train the
backbone and "the FC layers … added in the backbone training phase" are removed for fusion (§4.2), so
`forward` returns the 512-d features and `classify` the training-phase logits. Paper silent: padding
(none — Table 1's output lengths imply "valid" convolutions), the flatten order before the FC layer
(channels-major, torch's default) and pooling stride (= kernel, torch's default; 703 → 349 needs floor).

Reusable for any raw 1-D signal: `forward` takes one window per row [B, L] → [B, D], or windows on a
time grid [B, W, L] → [B, W, D] (per-step features for a sequence model); `frame_signal` cuts a long
signal [B, N] into such windows.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_out_length(length: int, kernel: int, stride: int = 1) -> int:
    """Output length of an unpadded convolution / pooling (floor, as torch computes it)."""
    return (length - kernel) // stride + 1


def frame_signal(signal: Tensor, window: int, hop: int) -> Tensor:
    """[B, N] signal → [B, W, window] overlapping windows, W = (N - window) // hop + 1 (no padding)."""
    if signal.dim() != 2:
        raise ValueError(f"frame_signal expects [B, N], got shape {tuple(signal.shape)}")
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    if signal.shape[1] < window:
        raise ValueError(f"signal of {signal.shape[1]} samples is shorter than one window of {window}")
    return signal.unfold(1, window, hop)


class CNN1D(nn.Module):
    """Table 1's physiological backbone; defaults are the table's (seed 004 §4.2)."""

    def __init__(
        self,
        input_length: int = 2816,  # Table 1: input 2816×1
        channels: tuple[int, ...] = (32, 64),  # Table 1: 32 and 64 filters
        kernel: int = 5,  # Table 1: kernel 5 in both convolutions
        strides: tuple[int, ...] = (2, 1),  # Table 1: stride 2, then 1
        pool: int = 2,  # Table 1: max pooling 2 after each convolution
        feature_dim: int = 512,  # Table 1: 1st FC 512; §4.2 "outputs a 512-dimensional feature vector"
        n_classes: int | None = 2,  # Table 1: 2nd FC 2 (backbone training only); None = no classifier
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels {channels} and strides {strides} must be non-empty and of equal length")
        layers: list[nn.Module] = []
        length, in_ch = input_length, 1
        for out_ch, stride in zip(channels, strides):
            layers += [nn.Conv1d(in_ch, out_ch, kernel, stride=stride), nn.ReLU(), nn.MaxPool1d(pool)]
            length = conv_out_length(conv_out_length(length, kernel, stride), pool, pool)
            if length < 1:
                raise ValueError(f"input_length {input_length} is too short for the convolution stack")
            in_ch = out_ch
        self.input_length = input_length
        self.out_length = length  # 349 with the defaults (Table 1)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(in_ch * length, feature_dim), nn.ReLU())
        self.classifier = nn.Linear(feature_dim, n_classes) if n_classes else None
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        """[B, L] → [B, D] or [B, W, L] → [B, W, D] (L = input_length)."""
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_length:
            raise ValueError(f"CNN1D expects [B, {self.input_length}] or [B, W, {self.input_length}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        h = self.features(x.reshape(-1, 1, self.input_length))
        return self.fc(h.flatten(1)).reshape(*lead, self.feature_dim)

    def classify(self, x: Tensor) -> Tensor:
        """Training-phase logits (Table 1's 2nd FC) for [B, L] or [B, W, L] windows."""
        if self.classifier is None:
            raise ValueError("this CNN1D was built without a classifier (n_classes=None)")
        return self.classifier(self(x))
