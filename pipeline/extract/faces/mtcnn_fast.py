"""facenet-pytorch's MTCNN detection, fast and exact: the same networks, NMS and thresholds as its
`MTCNN.detect`, with its slow parts replaced by equivalents that give the same numbers — every area
resampling (pyramid levels, per-candidate crops) read off one integral image (`AreaSampler`), and
max pooling as elementwise maxima (`ExactMaxPool`); R-/O-Net run in cache-sized balanced chunks
(`in_chunks`). `pipeline.extract.faces.detector` runs it per batch of
frames; tests compare it with `MTCNN.detect` candidate by candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.extract.faces.face_track import Candidates


def _area_bounds(start: torch.Tensor, length: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """adaptive_avg_pool2d's windows: output i of a span [start, start + length) pools
    [start + floor(i·length/n), start + ceil((i+1)·length/n)); start, length (K,) → (K, n) each."""
    i = torch.arange(n_out, device=length.device)
    lo = start[:, None] + torch.div(i[None] * length[:, None], n_out, rounding_mode="floor")
    hi = start[:, None] - torch.div(-(i[None] + 1) * length[:, None], n_out, rounding_mode="floor")
    return lo, hi


class AreaSampler:
    """Area resampling (`F.interpolate(mode="area")`, i.e. `adaptive_avg_pool2d`) of a batch of
    8-bit frames, bit for bit, read off their integral image: each output is an exact integer window
    sum (float32 holds it exactly below 2**24) divided by the window's height, then its width, as
    torch does. Outputs are N×3×h×w float32 in the channels-last layout facenet-pytorch's own
    (permuted uint8) input gives its networks."""

    def __init__(self, frames: np.ndarray, device: torch.device):
        b, h, w, c = frames.shape
        dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
        self.h, self.w = h, w
        self.sums = torch.zeros((b, h + 1, w + 1, c), dtype=dtype, device=device)
        x = torch.as_tensor(frames, device=device)
        self.sums[:, 1:, 1:] = x.cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)

    @staticmethod
    def _mean(s: torch.Tensor, kh: torch.Tensor, kw: torch.Tensor) -> torch.Tensor:
        return s.float() / kh.float() / kw.float()

    def resize(self, h: int, w: int) -> torch.Tensor:
        """Every frame area-resampled to h×w: N×3×h×w."""
        zero = torch.zeros(1, dtype=torch.long, device=self.sums.device)
        (r0, r1), (c0, c1) = (
            (v[0] for v in _area_bounds(zero, zero + size_in, size_out)) for size_in, size_out in ((self.h, h), (self.w, w))
        )
        rows = self.sums.index_select(1, r1) - self.sums.index_select(1, r0)
        s = rows.index_select(2, c1) - rows.index_select(2, c0)
        return self._mean(s, (r1 - r0)[None, :, None, None], (c1 - c0)[None, None, :, None]).permute(0, 3, 1, 2)

    def crops(self, frame: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, size: int) -> torch.Tensor:
        """Rectangles [y0, y1) × [x0, x1) of frames `frame` (K,), each area-resampled to size²: K×3×size×size."""
        r0, r1 = _area_bounds(y0, y1 - y0, size)
        c0, c1 = _area_bounds(x0, x1 - x0, size)
        b, h1, w1, c = self.sums.shape
        flat = self.sums.view(b * h1 * w1, c)
        base = frame[:, None, None] * (h1 * w1)

        def corner(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:  # K×size×size×C
            return flat.index_select(0, (base + r[:, :, None] * w1 + col[:, None, :]).reshape(-1)).view(len(frame), size, size, c)

        s = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)
        # contiguous NCHW, as torch.cat of facenet-pytorch's one-box resamplings gives R-/O-Net
        return self._mean(s, (r1 - r0)[:, :, None, None], (c1 - c0)[:, None, :, None]).permute(0, 3, 1, 2).contiguous()


class ExactMaxPool(torch.nn.Module):
    """`nn.MaxPool2d(k, s, ceil_mode=True)` (no padding) as elementwise maxima of k strided views
    per axis: the same values (a max is exact in any order) in the same memory layout as torch's
    kernel, several times faster than its CPU kernels on MTCNN's small channel counts."""

    def __init__(self, pool: torch.nn.MaxPool2d):
        super().__init__()
        k, s = pool.kernel_size, pool.stride
        if not (pool.ceil_mode and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and isinstance(k, int) and isinstance(s, int)):
            raise ValueError(f"ExactMaxPool covers square ceil-mode pooling without padding, not {pool}")
        self.k, self.s = k, s

    def _along(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        k, s, n = self.k, self.s, x.shape[dim]
        out = -(-(n - k) // s) + 1
        if (out - 1) * s >= n:  # torch drops a last window that would start past the input
            out -= 1
        inside = (n - k) // s + 1 if n >= k else 0  # windows that do not run off the edge
        pieces = []
        if inside:
            step = (slice(None),) * dim + (slice(None, None, s),)
            y = x.narrow(dim, 0, (inside - 1) * s + 1)[step]
            for j in range(1, k):
                y = torch.maximum(y, x.narrow(dim, j, (inside - 1) * s + 1)[step])
            pieces.append(y)
        # ceil mode: the last windows run off the edge and pool what is left
        pieces += [x.narrow(dim, i * s, n - i * s).amax(dim, keepdim=True) for i in range(inside, out)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
        return self._along(self._along(x, 2), 3).contiguous(memory_format=fmt)


def fast_pools(mtcnn: Any) -> None:
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, child in list(net.named_children()):
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(net, name, ExactMaxPool(child))


#: R-Net and O-Net run on about this many crops at a time, so that their layers' outputs stay in the
#: CPU caches (a 16-frame batch has ~1000 R-Net candidates; at facenet-pytorch's 512 the first layer's
#: output alone is 27 MB, O-Net's 30 MB for ~110 crops). CPU kernels give other bits for batches under
#: 16 crops than for larger ones, so the chunks are balanced (with several chunks, each has more than
#: size/2 ≥ 16 crops): the same numbers as one batch (tested). Measured on the benchmark's clips
#: (benchmarks/faces.py, 2 threads): ~10-20 % less detection time than one batch of 512.
RNET_CHUNK = 64
ONET_CHUNK = 32


def in_chunks(net: torch.nn.Module, x: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """`net` on `x` in ceil(len/size) balanced chunks (sizes differ by at most one), its outputs
    concatenated: facenet-pytorch's `fixed_batch_process` with smaller batches."""
    outs = [net(part) for part in torch.tensor_split(x, max(1, -(-len(x) // size)))]
    return tuple(torch.cat(o, dim=0) for o in zip(*outs))


class EmptyCrop(Exception):
    """A candidate box lies outside its frame: facenet-pytorch's own code handles that case."""


def fast_mtcnn_detect(mtcnn: Any, frames: np.ndarray) -> list[Candidates]:
    """facenet-pytorch's `detect_face` + `MTCNN.detect` on N same-sized RGB uint8 frames (N×H×W×3),
    with every area resampling read off one integral image (see the module docstring): the same
    candidates, in the same order, per frame. Raises EmptyCrop in the one case it does not cover."""
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms,
        batched_nms_numpy,
        bbreg,
        generateBoundingBox,
        pad,
        rerec,
    )

    device = next(mtcnn.pnet.parameters()).device
    sampler = AreaSampler(np.ascontiguousarray(frames), device)
    n, h, w = len(frames), sampler.h, sampler.w
    thresholds, factor = mtcnn.thresholds, mtcnn.factor
    norm = lambda x: (x - 127.5) * 0.0078125  # noqa: E731

    # stage 1: P-Net over the image pyramid (as detect_face)
    m = 12.0 / mtcnn.min_face_size
    minl = min(h, w) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    boxes_l, inds_l, picks_l, offset = [], [], [], 0
    for scale in scales:
        reg, probs = mtcnn.pnet(norm(sampler.resize(int(h * scale + 1), int(w * scale + 1))))
        boxes_s, inds_s = generateBoundingBox(reg, probs[:, 1], scale, thresholds[0])
        boxes_l.append(boxes_s)
        inds_l.append(inds_s)
        picks_l.append(batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5) + offset)
        offset += boxes_s.shape[0]
    boxes, image_inds = torch.cat(boxes_l)[torch.cat(picks_l)], torch.cat(inds_l)[torch.cat(picks_l)]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([
        boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
        boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4],
    ]).permute(1, 0)
    boxes = rerec(boxes)

    def box_crops(size: int) -> torch.Tensor:
        y, ey, x, ex = (torch.as_tensor(v, dtype=torch.long, device=device) for v in pad(boxes, w, h))
        if not bool(((ey > y - 1) & (ex > x - 1)).all()):
            raise EmptyCrop
        return norm(sampler.crops(image_inds, y - 1, ey, x - 1, ex, size))

    # stage 2: R-Net, in chunks of RNET_CHUNK crops
    if len(boxes) > 0:
        out = in_chunks(mtcnn.rnet, box_crops(24), RNET_CHUNK)
        out0, score = out[0].permute(1, 0), out[1].permute(1, 0)[1, :]
        ipass = score > thresholds[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out0[:, ipass].permute(1, 0)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = rerec(bbreg(boxes, mv))

    # stage 3: O-Net, landmarks
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:
        out = in_chunks(mtcnn.onet, box_crops(48), ONET_CHUNK)
        out0, out1, score = out[0].permute(1, 0), out[1].permute(1, 0), out[2].permute(1, 0)[1, :]
        ipass = score > thresholds[2]
        points = out1[:, ipass]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out0[:, ipass].permute(1, 0)
        w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)
        boxes = bbreg(boxes, mv)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes, points, image_inds = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    out_c = []
    for i in range(n):
        sel = image_inds == i
        if not sel.any():
            out_c.append(Candidates.none())
        else:
            b = boxes[sel]
            out_c.append(Candidates(b[:, :4].astype(np.float32), b[:, 4].astype(np.float32), points[sel].astype(np.float32)))
    return out_c


def area_downscale(frames: np.ndarray, longest: int, device: torch.device) -> np.ndarray:
    """Frames shrunk (area resampling, rounded to uint8) so that their longer side is `longest`."""
    h, w = frames.shape[1:3]
    s = longest / max(h, w)
    size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
    small = AreaSampler(np.ascontiguousarray(frames), device).resize(*size)
    return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
