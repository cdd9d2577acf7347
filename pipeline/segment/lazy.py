"""Array-likes whose rows are computed when indexed: the features of `Segments` without holding them whole.

Each has `.shape`, `.dtype`, `.ndim`, `len()` and `view[rows]` → np.ndarray for an int, a slice, or an
int/bool array over the first axis (further indices after it apply to those rows); `np.asarray(view)`
materialises the whole array (for old callers and tests). Training and scoring index a batch of rows at a
time (`pipeline.runs.feed.to_tensors`), so only that batch is ever built.

- `RowView`: rows `idx` of another array (a `Split`'s partition of the segments): `view[r]` = `base[idx[r]]`.
- `Renormalised`: fold-0 z-scores re-expressed with another fold's statistics (`Segments.for_fold`), the
  same elementwise float32 arithmetic as computing the whole array at once, so the same bits.
- `ContextFrames`: 002's stacked context (frames layout with `stack_seconds`): each frame's n frames of
  context gathered from the stored D-dim frames by offset, z-scored per stacked dim, instead of an n× copy.
"""

from __future__ import annotations

import copyreg
import mmap
from typing import Any

import numpy as np

# bytes per block when a view is materialised or written out, or the segment stage normalises (`iter_chunks`)
_CHUNK_BYTES = 64 << 20


class LazyRows:
    """The indexing protocol; subclasses define `shape`, `dtype` and `_rows(idx)` for a 1-D int64 index."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"

    def _index(self, key: Any) -> np.ndarray | None:
        """The first-axis key as int64 rows (negative counted from the end), None if it is not one."""
        n = self.shape[0]
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64)
        if isinstance(key, (list, np.ndarray)):
            arr = np.asarray(key)
            if arr.dtype == bool and arr.ndim == 1:
                if len(arr) != n:
                    raise IndexError(f"boolean index of length {len(arr)} for an axis of length {n}")
                return np.flatnonzero(arr)
            if arr.ndim == 1 and (arr.dtype.kind in "iu" or arr.size == 0):
                idx = arr.astype(np.int64)
                if idx.size and (idx.min() < -n or idx.max() >= n):
                    raise IndexError(f"index out of bounds for an axis of length {n}")
                return np.where(idx < 0, idx + n, idx)
        return None

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -self.shape[0] <= i < self.shape[0]:
                raise IndexError(f"index {i} out of bounds for an axis of length {self.shape[0]}")
            return self._rows(np.array([i % self.shape[0]], np.int64))[0]
        if isinstance(key, tuple) and key and not any(isinstance(k, (list, np.ndarray)) for k in key[1:]):
            first, rest = key[0], key[1:]
            if isinstance(first, (int, np.integer)):
                return self[first][rest]
            if self._index(first) is not None:
                return self[first][(slice(None),) + rest]
        idx = self._index(key)
        if idx is not None:
            return self._rows(idx)
        return np.asarray(self)[key]  # anything else (Ellipsis first, fancy indices after axis 0): the whole array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        for a, b in iter_chunks(self):
            out[a:b] = self._rows(np.arange(a, b, dtype=np.int64))
        return out if dtype is None else out.astype(dtype, copy=False)


def iter_chunks(arr: Any, chunk_bytes: int | None = None):
    """(start, stop) row ranges of `arr` of about `chunk_bytes` each (default `_CHUNK_BYTES`)."""
    chunk_bytes = chunk_bytes or _CHUNK_BYTES
    n = len(arr)
    row = max(1, int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize)
    step = max(1, chunk_bytes // row)
    for a in range(0, n, step):
        yield a, min(n, a + step)


def take_rows(arr: Any, idx: np.ndarray) -> np.ndarray:
    """`arr[idx]` as a new ndarray. For a memory-mapped array (np.memmap, `np.load(mmap_mode="r")`) the
    mapping's pages are given back afterwards (madvise DONTNEED: they stay in the kernel's page cache,
    only this process stops holding them), so reading an epoch of batches does not grow its resident
    set to the size of the file."""
    out = np.asarray(arr[idx])
    release_pages(arr)
    return out


def release_pages(arr: Any) -> None:
    """Give back the pages of a memory-mapped array (np.memmap, `np.load(mmap_mode=...)`) that this process
    holds (madvise DONTNEED); nothing for any other array. The data stay in the kernel's page cache (and in
    the file: for a shared writable mapping, written pages are kept as the file's dirty pages, not dropped),
    so the resident set does not grow to the size of the file as it is read or written."""
    mapping = getattr(arr, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)


class RowView(LazyRows):
    """Rows `idx` of `base` (an ndarray, a memmap or another lazy array): `view[r]` = `base[idx[r]]`."""

    def __init__(self, base: Any, idx: np.ndarray) -> None:
        idx = np.asarray(idx, np.int64)
        if isinstance(base, RowView):  # a view of a view indexes the original
            base, idx = base.base, base.idx[idx]
        self.base, self.idx = base, idx
        self.shape = (len(idx), *base.shape[1:])
        self.dtype = np.dtype(base.dtype)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        return take_rows(self.base, self.idx[idx])


class Renormalised(LazyRows):
    """`base`'s z-scores (statistics mean0/std0) as z-scores of fold statistics (mean, std), float32,
    0 where `mask` [N, T] is False: ((v·std0 + mean0) − mean) / std, elementwise (`Segments.for_fold`)."""

    def __init__(self, base: Any, mask: np.ndarray, mean0: np.ndarray, std0: np.ndarray, mean: np.ndarray,
                 std: np.ndarray) -> None:
        self.base, self.mask = base, mask
        self.mean0, self.std0, self.mean, self.std = mean0, std0, mean, std
        self.shape, self.dtype = tuple(base.shape), np.dtype(np.float32)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        raw = take_rows(self.base, idx) * self.std0 + self.mean0
        out = ((raw - self.mean) / self.std).astype(np.float32)
        out[~self.mask[idx]] = 0.0
        return out


class ContextFrames(LazyRows):
    """[N, T, n·D] float32: frame t of sequence i holds the n frames `table[start[i] + t + j]`, j = 0 … n−1,
    side by side, z-scored per stacked dim with (mean, std) [n·D], and 0 where `mask` [N, T] is False.

    `table` [R, D] float32 holds each clip's frames once, padded with n//2 zero rows before and
    n − 1 − n//2 after (zeros stand for the slots outside the clip, as absent frames are zero), so
    slot j of the clip's frame f is padded row f + j (pipeline.segment.layouts.stack_context); `start[i]` is the
    padded row of sequence i's first frame. Steps past a sequence's end are masked, so what they would
    read does not matter (the index is clipped into the table)."""

    def __init__(self, table: Any, start: np.ndarray, mask: np.ndarray, n: int, mean: np.ndarray, std: np.ndarray) -> None:
        self.table, self.start, self.mask, self.n = table, np.asarray(start, np.int64), mask, int(n)
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        steps, dim = mask.shape[1], table.shape[1]
        self.shape, self.dtype = (len(self.start), steps, self.n * dim), np.dtype(np.float32)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        steps, n = self.shape[1], self.n
        pos = self.start[idx][:, None, None] + np.arange(steps)[None, :, None] + np.arange(n)[None, None, :]
        np.clip(pos, 0, len(self.table) - 1, out=pos)
        raw = take_rows(self.table, pos.reshape(-1)).reshape(len(idx), steps, self.shape[2])
        # what the whole-array build did in place: (x − mean) / std in float32, then 0 where absent
        out = (raw - self.mean) / self.std
        out[~self.mask[idx]] = 0.0
        return out


# ---- pickling a read-only memory map by reference ------------------------------------------------
# numpy pickles a np.memmap (and every view of one) by value: sending the segments to a worker process
# (pipeline.core.compute) would copy the whole split into the pickle and into each worker. A read-only map
# travels instead as (file, byte offset, shape, strides, dtype) and is mapped again on arrival, so every
# worker shares the kernel's page cache. Registered with copyreg, which pickle, cloudpickle and Ray's
# serialiser all consult. Writable or copy-on-write maps keep numpy's by-value pickling (a reference
# would share writes that the by-value copy would not).

_MAPPED: dict[str, np.memmap] = {}  # a worker's whole-file maps, one per file


def _reduce_memmap(a: np.memmap) -> tuple:
    mapping = getattr(a, "_mmap", None)
    if a.mode != "r" or not a.filename or not isinstance(mapping, mmap.mmap) or a.size == 0:
        return np.asarray(a).view(np.ndarray).__reduce__()
    # the mapping starts at the allocation boundary below the original array's offset (np.memmap.__new__),
    # and every view of it shares that mapping and that `offset` attribute
    start = a.offset - a.offset % mmap.ALLOCATIONGRANULARITY
    at = start + (a.__array_interface__["data"][0] - np.frombuffer(mapping, np.uint8).ctypes.data)
    return _mapped_view, (str(a.filename), at, a.shape, a.strides, a.dtype.str)


def _mapped_view(filename: str, at: int, shape: tuple, strides: tuple, dtype: str) -> np.memmap:
    whole = _MAPPED.get(filename)
    if whole is None:
        whole = _MAPPED[filename] = np.memmap(filename, np.uint8, mode="r")
    view = np.ndarray.__new__(np.memmap, shape, np.dtype(dtype), buffer=whole._mmap, offset=at, strides=strides)
    view._mmap, view.filename, view.offset, view.mode = whole._mmap, whole.filename, at, "r"  # release_pages uses _mmap
    return view


copyreg.pickle(np.memmap, _reduce_memmap)
