"""Runs one extractor over a corpus: per-clip cache, batching, progress, error policy, atomic output.

For each clip the runner computes the cache key (`pipeline.extract.cache`); clips already cached are
not extracted again. The missing ones go to the extractor in groups of `extractor.batch_clips` (so an
extractor can batch work across clips), each result is cached as soon as it exists (as the rows
`extractor.clip_table` makes of it), and the table — `data/features/<name>.parquet`, or `out` where
the stage names another (the faces stage: data/faces/detections.parquet), with the schema
`extractor.table_schema` gives — is then streamed from the cache in clip order: memory stays flat in
the corpus size, and a killed run keeps every clip it finished.

Errors: a clip whose media cannot be used raises `ExtractionError` (or `MediaError`); under
`on_error: fail` the stage stops with that message, under `skip` the clip gets no rows (segment
then treats the modality as missing for the whole clip) and the error is recorded in
`data/errors/<feature>.csv`, so nothing is silently dropped. Errors are not cached: a skipped clip is
tried again next run.

Workers (`pipeline.core.compute`, environment variables): the uncached clips are cut into groups that go to
a pool of workers — local processes, one per core by default (MER_WORKERS; 1, or a GPU: the clips run
in this process), or Ray actors under MER_BACKEND=ray — each building its extractor once, its torch
threads pinned, and come back in clip order, so the cache, the table, the error policy (the same clip
stops a `fail` run, the same clips are skipped) and the outputs are those of the one-process run. The
results travel back to this process, which alone writes the cache and the table.
"""

from __future__ import annotations

import csv
import io
import time
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

from tqdm import tqdm

from pipeline.core.compute import (
    ComputeSettings,
    compute_settings,
    map_ordered,
    worker_count,
)
from pipeline.core.errors import PipelineError
from pipeline.core.features import ClipFeatures
from pipeline.core.paths import ERRORS_DIR, FEATURES_DIR
from pipeline.core.store import TableWriter, write_text
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.cache import ClipCache
from pipeline.media import MediaError

OnError = Literal["fail", "skip"]
T = TypeVar("T")


class StageError(PipelineError):
    """A stage cannot finish; the message says which clip/file and why."""


@dataclass
class RunStats:
    """What one run did (printed by the stage, asserted by tests and the benchmark)."""

    clips: int = 0
    cached: int = 0
    extracted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, max(1, n))):
        yield batch


def extract_corpus(
    extractor: Extractor,
    clips: list[Clip],
    root: Path = Path("."),
    out_dir: Path = FEATURES_DIR,
    errors_dir: Path = ERRORS_DIR,
    on_error: OnError = "fail",
    cache_dir: str | Path | None = None,
    stats: RunStats | None = None,
    out: Path | None = None,
    factory: Callable[[], Extractor] | None = None,
    settings: ComputeSettings | None = None,
) -> Path:
    """Extract every clip (reusing cached clips under `cache_dir`; None: no persistent cache) and
    write the table `out` (default: `out_dir`/<name>.parquet); returns its path.

    `settings` (default: the environment, `pipeline.core.compute`): with several workers the uncached
    clips go to a pool of worker processes or Ray actors, each building its own extractor once with `factory` (a
    picklable callable giving an extractor identical to `extractor`, e.g. the registry's builder with
    the stage's params section; None: `extractor` itself is pickled to them)."""
    stats = stats if stats is not None else RunStats()
    settings = settings or compute_settings()
    start = time.perf_counter()
    with ClipCache(extractor.name, extractor.config_fingerprint(), cache_dir) as cache:
        keys = {c.clip_id: extractor.input_fingerprint(c, root) for c in clips}
        # clips shorter than one step give no rows: named all at once, before any work (never an empty table)
        short = too_short(extractor, clips)
        if short and on_error == "fail":
            raise StageError(f"{extractor.name}: {len(short)} clip{'s' * (len(short) != 1)} too short to extract "
                             "(`on_error: skip` leaves them out, logged):\n"
                             + "\n".join(f"  clip {clip_id}: {why}" for clip_id, why in short))
        stats.errors += short
        failed: set[str] = {clip_id for clip_id, _ in short}
        todo = [c for c in clips if keys[c.clip_id] not in cache and c.clip_id not in failed]
        stats.clips, stats.cached = len(clips), len(clips) - len(todo) - len(failed)
        with tqdm(total=len(clips), initial=stats.cached, desc=extractor.name, unit="clip", dynamic_ncols=True) as bar, \
                closing(_results(extractor, todo, root, factory, settings)) as results:
            for clip, result in results:
                bar.update(1)
                if isinstance(result, (ExtractionError, MediaError)):
                    if on_error == "fail":
                        raise StageError(f"{extractor.name}: clip {clip.clip_id}: {result}") from None
                    stats.errors.append((clip.clip_id, str(result)))
                    failed.add(clip.clip_id)
                elif isinstance(result, BaseException):
                    raise result  # a bug, not bad media: keep the traceback
                else:
                    cache.put(keys[clip.clip_id], extractor.clip_table(clip.clip_id, result))
                    stats.extracted += 1
        out = Path(out) if out is not None else Path(out_dir) / f"{extractor.name}.parquet"
        schema = extractor.table_schema(sorted(set(keys) - failed), dict(stats.errors))
        with TableWriter(out, schema) as writer:
            for clip_id in sorted(keys):
                if clip_id in failed:
                    continue
                table = cache.get(keys[clip_id])
                if table is None:
                    raise StageError(f"{extractor.name}: clip {clip_id}: cache entry {cache.path(keys[clip_id])} vanished during the run")
                # the entry may have been made for an identical clip under another id
                writer.write(table.set_column(0, "clip_id", _repeat(clip_id, len(table))))
    write_errors(Path(errors_dir) / f"{extractor.name}.csv", stats.errors)
    stats.seconds = time.perf_counter() - start
    return out


def too_short(extractor: Extractor, clips: list[Clip]) -> list[tuple[str, str]]:
    """(clip id, cause) of each clip shorter than one step of the extractor's rate (e.g. 0.08 s at the
    faces' 5 Hz: no sampled frame), which would give no rows. Extractors with irregular steps (words)
    have none; an audio clip longer than a step but shorter than a frame is the extractor's own error."""
    rate = getattr(extractor, "rate_hz", None)
    if not rate:
        return []
    return [(c.clip_id, f"{c.duration:g} s is shorter than one step of {extractor.name} ({1 / rate:g} s at "
             f"{rate:g} Hz): no step to extract")
            for c in clips if isinstance(c.duration, (int, float)) and c.duration * rate < 1 - 1e-9]


def _results(
    extractor: Extractor, todo: list[Clip], root: Path, factory: Callable[[], Extractor] | None, settings: ComputeSettings
) -> Iterator[tuple[Clip, Any]]:
    """(clip, rows or its error) for each clip of `todo`, in order: here, or from workers (local processes
    or Ray actors), each building its own extractor once."""
    device = getattr(extractor, "device", None)
    gpu = getattr(device, "type", device) == "cuda"
    workers = worker_count(len(todo), settings, gpu)
    if settings.backend == "local" and workers == 1:
        for group in batched(todo, extractor.batch_clips):
            yield from extractor.process_clips(group, root)
        return
    groups = work_groups(todo, extractor.batch_clips, workers)
    # the params resolved here (e.g. a measured precision, kept in the per-machine decision file) are
    # what every worker's extractor must resolve too
    setup = partial(_remote_extractor, factory or partial(_same, extractor), extractor.name, extractor.config_fingerprint(),
                    extractor.meta().params)
    for done in map_ordered(partial(_process_group, root=root), groups, setup=setup, settings=settings, gpu=gpu,
                            state=extractor):
        yield from done


#: a group holds at most 1/(GUIDE × workers) of the clips not yet grouped ("guided" scheduling, as OpenMP's
#: `schedule(guided)`, halved as in factoring): large groups first, which batch well, then ever smaller
#: ones, so the workers finish within about one clip of each other instead of one idling while another
#: runs a last large group (face_embed's last group of 12 clips kept one of 2 cores idle for 19 s)
GUIDE = 2


def work_groups(clips: list[T], batch_clips: int, workers: int) -> list[list[T]]:
    """The clips, in order, cut into work items for `workers` workers (local processes or Ray actors): each
    group at most the extractor's `batch_clips` (faces' is unbounded) and at most 1/(GUIDE × workers) of
    the clips still to cut, so groups shrink to single clips at the end. With many clips all but the last
    few groups are `batch_clips` long. The outputs do not depend on the cut: an extractor's rows for a clip
    are the same in any group (tested for the extractors that batch across clips in tests/test_compute.py)."""
    groups, start = [], 0
    while start < len(clips):
        size = max(1, min(batch_clips, -(-(len(clips) - start) // (GUIDE * workers))))
        groups.append(clips[start:start + size])
        start += size
    return groups


def _same(extractor: Extractor) -> Extractor:
    return extractor


def _remote_extractor(factory: Callable[[], Extractor], name: str, fingerprint: str, params: dict[str, Any]) -> Extractor:
    """A worker's extractor: built once, and checked to be configured as the caller's — the cache
    key's configuration, and the params the table's metadata records (which include choices made on
    the machine, e.g. a face embedder's measured precision under `bf16: auto`)."""
    extractor = factory()
    if extractor.config_fingerprint() != fingerprint:
        raise StageError(
            f"{name}: the extractor built on a worker is configured differently from this process's "
            f"(its factory must build it from the same params and weights)"
        )
    mine = extractor.meta().params
    if mine != params:
        keys = sorted(k for k in set(mine) | set(params) if mine.get(k) != params.get(k))
        raise StageError(
            f"{name}: a worker resolved {', '.join(f'{k}={mine.get(k)!r}' for k in keys)} where this process has "
            f"{', '.join(f'{k}={params.get(k)!r}' for k in keys)}; workers on another kind of machine decide for "
            "themselves: set these in params.yaml (e.g. bf16: true or false) to use one choice everywhere"
        )
    return extractor


def _process_group(extractor: Extractor, group: list[Clip], root: Path) -> list[tuple[Clip, Any]]:
    """One group on a worker: per-clip rows or media errors travel back; any other error is a bug
    and raised there (it comes back with the worker's traceback)."""
    out = list(extractor.process_clips(group, root))
    for _, result in out:
        if isinstance(result, BaseException) and not isinstance(result, (ExtractionError, MediaError)):
            raise result
    return out


def _repeat(value: str, n: int):
    import pyarrow as pa

    return pa.array([value] * n, pa.string())


def write_errors(path: Path, errors: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["clip_id", "error"])
    w.writerows(errors)
    write_text(path, buf.getvalue())


__all__ = ["ClipFeatures", "RunStats", "StageError", "batched", "extract_corpus", "write_errors"]
