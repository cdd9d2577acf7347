"""What every stage script shares: run its main, turning pipeline errors into one clear line."""

from __future__ import annotations

import os
import sys
from typing import Callable

from pipeline.errors import PipelineError


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main; a PipelineError prints `error: <message>` and exits 1 (no traceback)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
