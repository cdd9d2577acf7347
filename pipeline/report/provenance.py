"""What a report was built from: the params file's hash, the params sections it shows (validated, with
defaults) and their hashes, the code version (git) and when it was generated."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import PARAMS_FILE, ConfigError, load_section, section_hash
from pipeline.report.inputs import ReportError

SHOWN_SECTIONS = ("train", "evaluate")


@dataclass
class Provenance:
    params_sha256: str
    sections: dict[str, dict]  # validated params sections shown in the report
    section_hashes: dict[str, str]
    code_version: str
    generated_utc: str


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
        code_version=code_version(root),
        generated_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
