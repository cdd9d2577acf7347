"""Temporal Convolutional Network (Bai, Kolter & Koltun 2018, "An empirical evaluation of generic
convolutional and recurrent networks for sequence modeling"), the TCN that seed 000 §3.1 cites as [21].

One level = two dilated 1-D convolutions (weight-normalised, ReLU, dropout after each) plus a residual
connection (a 1×1 convolution where the channel count changes), dilation base**level. `causal=True`
pads on the left only (Bai et al.'s TCN: output t sees inputs ≤ t); `causal=False` pads symmetrically
(output t sees t ± half the receptive field). Receptive field: 1 + 2·(kernel−1)·Σ_l base**l.

Masks: `forward(x [B,T,D], mask [B,T] True=valid)` zero-fills absent steps before convolving (a
convolution cannot skip steps; a zero input is the documented degradation) and zeroes the output at
absent steps, so nothing computed there leaks into attention that forgets to mask it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


class TemporalBlock(nn.Module):
    def __init__(
        self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float, causal: bool, weight_norm: bool
    ) -> None:
        super().__init__()
        total = (kernel - 1) * dilation
        # causal: all padding on the left; otherwise split (the extra one on the left when odd)
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)
        wrap = _weight_norm if weight_norm else (lambda m: m)
        self.conv1 = wrap(nn.Conv1d(c_in, c_out, kernel, dilation=dilation))
        self.conv2 = wrap(nn.Conv1d(c_out, c_out, kernel, dilation=dilation))
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # [B,C,T]
        h = self.drop(self.relu(self.conv1(nn.functional.pad(x, self.pad))))
        h = self.drop(self.relu(self.conv2(nn.functional.pad(h, self.pad))))
        return self.relu(h + self.downsample(x))


class TCN(nn.Module):
    """forward(x [B,T,D_in], mask [B,T] | None) -> [B,T,d_out]."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        layers: int = 6,  # 000 §5.3
        kernel: int = 9,  # 000 §5.3
        dropout: float = 0.2,  # 000 §5.3 ("throughout all the model")
        causal: bool = True,  # Bai et al. [21]; 000 is silent
        dilation_base: int = 2,  # Bai et al. [21]; 000 is silent
        hidden: int | None = None,  # channels of the inner levels (default d_out, as Bai et al.)
        weight_norm: bool = True,  # Bai et al. [21]
    ) -> None:
        super().__init__()
        if layers < 1 or kernel < 1:
            raise ValueError(f"TCN needs layers >= 1 and kernel >= 1, got {layers}, {kernel}")
        hidden = hidden or d_out
        chans = [d_in] + [hidden] * (layers - 1) + [d_out]
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(chans[i], chans[i + 1], kernel, dilation_base**i, dropout, causal, weight_norm)
                for i in range(layers)
            )
        )
        self.receptive_field = 1 + 2 * (kernel - 1) * sum(dilation_base**i for i in range(layers))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            x = x.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
        y = self.blocks(x.transpose(1, 2)).transpose(1, 2)
        if mask is not None:
            y = y.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
        return y
