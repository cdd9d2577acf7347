import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make test` runs two pytest workers on two cores: one thread each (set before torch is imported), or
# the workers' thread pools fight over the cores (25-40x slower on shared cores, DEVELOPERS.md)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# and, for the same reason, each test's stages in one process (`pipeline.core.compute`'s default is a worker
# per core); the tests of several workers set MER_WORKERS themselves (tests/test_compute.py,
# tests/test_pipeline_dvc.py)
os.environ.setdefault("MER_WORKERS", "1")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path("shared") / "data" / "crema-d-sample"


def _crema_d_sample() -> Path:
    """`../shared/data/crema-d-sample` beside this checkout; for a clone made elsewhere (`git clone . $(mktemp -d)`,
    as CI does), beside the checkout it was cloned from (its `origin`); MER_CREMA_D_SAMPLE overrides both."""
    if os.environ.get("MER_CREMA_D_SAMPLE"):
        return Path(os.environ["MER_CREMA_D_SAMPLE"])
    candidates = [REPO.parent / SAMPLE]
    try:
        origin = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / SAMPLE)
    return next((c for c in candidates if (c / "VideoFlash").is_dir()), candidates[0])


CREMA_D = _crema_d_sample()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def crema_d_dir() -> Path:
    """The three real CREMA-D clips shipped beside the checkout (skip where they are absent)."""
    if not (CREMA_D / "VideoFlash").is_dir():
        pytest.skip(f"CREMA-D sample not found at {CREMA_D}")
    return CREMA_D


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: torch's intra-op thread pool only adds contention (and on busy shared cores,
    slows a test file down by an order of magnitude); one thread, restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """The long integration modules first, so that under `pytest -n 2 --dist loadfile` (make test) each
    starts at once on a worker while the other worker takes the unit tests, instead of one of them
    starting last and setting the suite's length alone."""
    items.sort(key=lambda item: 0 if Path(str(item.fspath)).name.startswith("test_pipeline_") else 1)


def pytest_terminal_summary(terminalreporter):
    """Say it loudly when the CREMA-D sample is absent: over a hundred tests then skip, and a green run
    would hide that they never ran (a clone must sit beside ../shared, as CI's does)."""
    lacking = [r for r in terminalreporter.stats.get("skipped", []) if "CREMA-D sample not found" in str(r.longrepr)]
    if lacking:
        terminalreporter.write_line(
            f"WARNING: {len(lacking)} tests skipped: the CREMA-D sample clips are not at {CREMA_D} "
            "(../shared/data/crema-d-sample beside this checkout)", red=True, bold=True)
