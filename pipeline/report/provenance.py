"""What a report was built from: the params file's hash, the params sections it shows (validated, with
defaults) and their hashes, and the code.

The report is a DVC output, so it is a function of its inputs only: the code is named by a hash of
the content of the report stage's own code deps (the .py files dvc.yaml lists for `report`, its import
closure: the code that rerunning the report would run; each upstream stage's code is in dvc.lock), not
by the git commit or the clock, which differ between two runs of the same inputs (a clone that reproduces the
pipeline would otherwise change dvc.lock and the committed report hash). The time is shown only when
`SOURCE_DATE_EPOCH` is set (the reproducible-builds convention).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.config import PARAMS_FILE, ConfigError, load_section, section_hash
from pipeline.report.eval_files import ReportError

SHOWN_SECTIONS = ("train", "evaluate")


@dataclass
class Provenance:
    params_sha256: str
    sections: dict[str, dict]  # validated params sections shown in the report
    section_hashes: dict[str, str]
    code_version: str
    generated_utc: str


def report_code(root: Path) -> list[Path]:
    """The .py files among the report stage's deps in dvc.yaml (folders: their .py files); without a
    dvc.yaml that lists them, every .py file of pipeline/ and stages/."""
    try:
        import yaml

        deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    except (OSError, KeyError, TypeError, ValueError):
        deps = ["pipeline", "stages"]
    files: set[Path] = set()
    for dep in deps:
        path = root / str(dep)
        if path.is_dir() and str(dep).split("/")[0] in ("pipeline", "stages"):
            files |= {p for p in path.rglob("*.py") if "__pycache__" not in p.parts}
        elif path.suffix == ".py" and path.is_file():
            files.add(path)
    return sorted(files)


def code_hash(root: Path) -> str:
    """sha256 (16 hex digits) of the report stage's code (`report_code`) by path and content; 'unknown' if none."""
    h = hashlib.sha256()
    files = report_code(root)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16] if files else "unknown"


def generated_at() -> str:
    """SOURCE_DATE_EPOCH as a UTC time, or '' (the report shows no time: it would differ run to run)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch.isdigit():
        return ""
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def code_version(root: Path) -> str:
    """'<short hash>' or '<short hash> (uncommitted changes to tracked files)'; 'unknown' without git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = head.stdout.strip() or "unknown"
    if dirty.returncode != 0:
        return f"{version} (working tree state unknown)"
    return f"{version} (uncommitted changes to tracked files)" if dirty.stdout.strip() else version


def provenance(root: Path) -> Provenance:
    path = root / PARAMS_FILE
    if not path.is_file():
        raise ReportError(f"{path}: not found; the report records its hash (run from the repository root)")
    try:
        sections = {name: load_section(name, path) for name in SHOWN_SECTIONS}
    except ConfigError as e:
        raise ReportError(str(e)) from None
    return Provenance(
        params_sha256=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        sections={n: s.model_dump(mode="json") for n, s in sections.items()},
        section_hashes={n: section_hash(s) for n, s in sections.items()},
        code_version=code_hash(root),
        generated_utc=generated_at(),
    )
