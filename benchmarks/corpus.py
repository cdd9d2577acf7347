"""Benchmark: a real-corpus-sized `manifest` corpus — 10,000 small media files (copies of one tiny WAV)
listed in manifest.csv, plus a labels CSV (two rows per clip).

    python benchmarks/corpus.py [--clips 10000] [--keep DIR]

Times (1) the adapter's read plus `validate.check` (target ≤ 30 s), and (2) `dvc status` in a temporary
DVC project (this repository's code, params.yaml's `corpus` pointed at the generated tree, an absolute
path outside the project) after a first `dvc repro corpus` (target ≤ 5 s): DVC hashes the corpus as a
dependency of the stage, without copying it into its cache. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_READ_S = 30.0
TARGET_STATUS_S = 5.0


def make_tree(root: Path, n: int) -> None:
    (root / "media").mkdir(parents=True)
    one = root / "one.wav"
    soundfile.write(one, np.zeros(800, np.int16), 8000, subtype="PCM_16", format="WAV")  # 0.1 s
    with open(root / "manifest.csv", "w", newline="") as f, open(root / "labels.csv", "w", newline="") as g:
        m, lab = csv.writer(f), csv.writer(g)
        m.writerow(["clip_id", "speaker", "media_path", "label", "partition"])
        lab.writerow(["clip_id", "t", "arousal", "valence"])
        for i in range(n):
            cid = f"clip{i:05d}"
            shutil.copyfile(one, root / "media" / f"{cid}.wav")
            m.writerow([cid, f"spk{i % 50:02d}", f"media/{cid}.wav", ("happy", "sad", "neutral")[i % 3], ""])
            lab.writerow([cid, 0.0, 0.1, -0.1])
            lab.writerow([cid, 0.05, 0.2, -0.2])
    one.unlink()


def time_read(root: Path) -> tuple[float, int, int]:
    from pipeline.corpus.manifest_csv import Params, read
    from pipeline.corpus.validate import check

    t0 = time.perf_counter()
    r = read(Params(root=str(root), labels_csv="labels.csv", label_ranges={"arousal": (-1, 1), "valence": (-1, 1)}))
    problems = check(r)
    return time.perf_counter() - t0, len(r.clips), len(problems)


def dvc_project(where: Path, corpus_root: Path) -> Path:
    """This repository's code and DVC files in `where`, a fresh git + DVC project."""
    proj = where / "project"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            dst = proj / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for rel in ("stages/corpus.py", "pipeline/corpus/stage.py", "pipeline/corpus/registry.py", "pipeline/corpus/validate.py",
                "pipeline/corpus/manifest_csv.py", "dvc.yaml", "params.yaml"):  # the working tree's versions
        shutil.copy2(REPO / rel, proj / rel)
    (proj / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(proj / ".dvc", ignore_errors=True)
    text = (proj / "params.yaml").read_text()
    start = text.index("corpus:")
    end = text.index("\n\n", start)
    section = (f"corpus:\n  name: manifest\n  root: {corpus_root}\n  labels_csv: labels.csv\n"
               "  label_ranges: {arousal: [-1, 1], valence: [-1, 1]}\n")
    (proj / "params.yaml").write_text(text[:start] + section + text[end + 1:])
    run = dict(cwd=proj, check=True, capture_output=True, text=True)
    subprocess.run(["git", "init", "-q"], **run)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], **run)
    return proj


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="build the tree here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    try:
        root = (args.keep or tmp / "corpus").resolve()
        if not (root / "manifest.csv").exists():
            make_tree(root, args.clips)
        read_s, clips, problems = time_read(root)

        proj = dvc_project(tmp, root)
        dvc = str(Path(sys.executable).parent / "dvc")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MER_THREADS": "1",
               "PYTHONPATH": str(proj)}
        t0 = time.perf_counter()
        repro = subprocess.run([dvc, "repro", "corpus"], cwd=proj, env=env, capture_output=True, text=True)
        repro_s = time.perf_counter() - t0
        if repro.returncode:
            raise SystemExit(f"dvc repro corpus failed:\n{repro.stdout}\n{repro.stderr}")
        t0 = time.perf_counter()
        status = subprocess.run([dvc, "status", "corpus"], cwd=proj, env=env, capture_output=True, text=True)
        status_s = time.perf_counter() - t0
        # a changed file of the corpus reruns the stage: DVC reports the dependency as modified
        some = next((root / "media").iterdir())
        original = some.read_bytes()
        some.write_bytes(original + b"\0")
        changed = subprocess.run([dvc, "status", "corpus"], cwd=proj, env=env, capture_output=True, text=True)
        some.write_bytes(original)
        cache = proj / ".dvc" / "cache"
        cached = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
        print(json.dumps({
            "clips": clips, "problems": problems,
            "read_check_s": round(read_s, 2), "read_check_target_s": TARGET_READ_S,
            "dvc_repro_s": round(repro_s, 2),
            "dvc_status_s": round(status_s, 2), "dvc_status_target_s": TARGET_STATUS_S,
            "dvc_status_up_to_date": "up to date" in status.stdout.lower(),
            "dvc_status_sees_a_changed_file": str(root) in changed.stdout and "modified" in changed.stdout,
            "dvc_cache_files": cached,
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
