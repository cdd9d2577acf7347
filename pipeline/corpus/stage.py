"""The `corpus` stage (stages/corpus.py calls `main`): the corpus named by params.yaml `corpus.name` → data/corpus/manifest.parquet,
data/corpus/labels.parquet (when the corpus has continuous labels) and data/errors/corpus.csv.

    demo        generate the demo corpus (data/corpus/media/<clip_id>.mp4, biosignals/, the tables)
    otherwise   the adapter (pipeline/corpus/registry.py) reads `corpus.root`; `validate.check` adds the
                problems every corpus can have; all of them are reported at once, before anything is
                extracted: `on_error: fail` stops with one line per problem, `skip` leaves the clips with
                problems out. data/errors/corpus.csv lists every problem (file, row, clip_id, problem;
                the header alone when there is none).

The stage never writes into or deletes from `corpus.root`: the manifest points at the corpus where it
is. The demo's stale-media cleanup touches data/corpus/media only.
"""

import csv
import io
import os
from pathlib import Path, PurePosixPath

from pipeline.core.config import load_section
from pipeline.core.paths import CORPUS_DIR, DATA, ERRORS_DIR, LABELS, MANIFEST
from pipeline.core.store import atomic_path
from pipeline.corpus.adapter import LayoutError, Problem
from pipeline.corpus.demo import CorpusError, generate_demo
from pipeline.corpus.manifest import write_labels, write_manifest
from pipeline.corpus.registry import adapter
from pipeline.corpus.validate import check, empty_classes, split

ERRORS = ERRORS_DIR / "corpus.csv"
ERRORS_HEADER = ["file", "row", "clip_id", "problem"]


def remove_stale_media(media_dir: Path, keep: set[str]) -> list[Path]:
    """Delete clips no longer in the corpus (and temporary files a killed run left behind)."""
    removed = []
    for f in sorted(media_dir.glob("*")):
        if f.is_file() and (f.name.startswith(".") or f.name not in keep):
            f.unlink()
            removed.append(f)
    return removed


def write_errors(path: Path, problems: list[Problem]) -> None:
    """data/errors/corpus.csv: one row per problem (file, row, clip_id, problem); the header alone if none."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ERRORS_HEADER)
    w.writerows([p.file, "" if p.row is None else p.row, p.clip_id or "", p.message] for p in problems)
    try:
        with atomic_path(path, suffix=".csv") as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
    except OSError as e:
        raise CorpusError(f"{e.filename or path}: cannot write ({e.strerror or e})") from None


def run_demo(params) -> None:
    info, clips, labels = generate_demo(params, CORPUS_DIR)
    try:
        removed = remove_stale_media(CORPUS_DIR / "media", {Path(c.media_path).name for c in clips})
        write_labels(LABELS, labels)
        write_manifest(MANIFEST, info, clips)
    except OSError as e:
        raise CorpusError(f"{e.filename or CORPUS_DIR}: cannot write ({e.strerror or e})") from None
    write_errors(ERRORS, [])
    print(
        f"corpus: {len(clips)} clips of {params.seconds:g} s from {params.speakers} speakers "
        f"({sum(c.transcript is None for c in clips)} without transcript, "
        f"{len(removed)} stale files removed) → {MANIFEST}"
    )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_root(root: Path) -> None:
    """The corpus must not hold the pipeline's outputs, nor lie inside them (DVC deletes a stage's
    outputs before rerunning it)."""
    here = Path(os.path.abspath(root))
    data = Path(os.path.abspath(DATA))
    if _inside(data, here):
        raise LayoutError(f"corpus.root {root}: holds the pipeline's {DATA}/ folder; expected the corpus's own "
                          "folder (the pipeline never writes into it)")
    if _inside(here, Path(os.path.abspath(CORPUS_DIR))):
        raise LayoutError(f"corpus.root {root}: inside {CORPUS_DIR}/, an output of this stage; expected the "
                          "corpus where it is kept")


def portable(clips: list, params) -> None:
    """Write every path under the corpus root through `corpus.root` as params.yaml gives it (adapters
    make paths absolute): with a root that is the same on every machine — a relative path such as a
    symlink `corpora/crema_d` in the project, or one mount point — every machine writes the same
    manifest, so `dvc pull` of the features and the lock agree across a lab."""
    given = PurePosixPath(Path(params.root).as_posix())
    roots = {Path(os.path.abspath(params.root_path())), params.root_path().resolve()}
    for c in clips:
        for attr in ("media_path", "audio_path"):
            value = getattr(c, attr)
            if not value:
                continue
            for root in roots:
                for candidate in (Path(os.path.abspath(value)), Path(value).resolve()):
                    if _inside(candidate, root):
                        setattr(c, attr, str(given / candidate.relative_to(root).as_posix()))
                        break
                else:
                    continue
                break


def run_adapter(params) -> None:
    check_root(params.root_path())
    read = adapter(params.name).read(params)
    problems = check(read)
    for note in read.notes:  # e.g. the label scale the adapter inferred: said before anything else
        print(f"corpus: {note}")
    n_listed = len(read.clips)
    if problems and params.on_error == "fail":
        write_errors(ERRORS, problems)
        lines = "\n".join(f"  {p.line()}" for p in problems)
        raise CorpusError(
            f"corpus '{params.name}' ({params.root}): {len(problems)} problem{'s' * (len(problems) != 1)} "
            f"(listed in {ERRORS}; `corpus.on_error: skip` leaves those clips out):\n{lines}"
        )
    clips, labels, left_out = split(read, problems)
    portable(clips, params)
    read.info.params = {**read.info.params, "root": params.root}  # as given, never this machine's absolute path
    if not clips:
        write_errors(ERRORS, problems)
        raise CorpusError(f"corpus '{params.name}' ({params.root}): no usable clip of {n_listed} listed "
                          f"(every problem is in {ERRORS})")
    for k in empty_classes(read.info.classes, clips):
        print(f"warning: corpus: class '{k}' has no clip{' left' if left_out else ''} (kept in the classes)")
    try:
        for folder in ("media", "biosignals"):  # a demo run's generated files, never the corpus's own
            if (CORPUS_DIR / folder).is_dir():
                remove_stale_media(CORPUS_DIR / folder, set())
        for folder in ("media", "biosignals"):  # empty, but there: later stages depend on them (demo layout)
            (CORPUS_DIR / folder).mkdir(parents=True, exist_ok=True)
        # always a labels table (no rows when the corpus has no continuous labels): segment depends on it
        write_labels(LABELS, labels if labels and labels.get("clip_id") else {"clip_id": [], "t": [], "arousal": [], "valence": []})
        write_manifest(MANIFEST, read.info, clips)
    except OSError as e:
        raise CorpusError(f"{e.filename or CORPUS_DIR}: cannot write ({e.strerror or e})") from None
    write_errors(ERRORS, problems)
    speakers = len({c.speaker for c in clips})
    n_labels = len(labels["clip_id"]) if labels else 0
    skipped = f"; {n_listed - len(clips)} of {n_listed} left out with problems (see {ERRORS})" if left_out else ""
    print(
        f"corpus: {params.name}: {len(clips)} clips from {speakers} speakers, {len(read.info.classes)} classes"
        f"{f', {n_labels} label rows' if n_labels else ''}{skipped} → {MANIFEST}"
    )


def main() -> None:
    params = load_section("corpus")
    if params.name == "demo":
        run_demo(params)
    else:
        run_adapter(params)
