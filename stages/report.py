"""DVC stage `report`: render data/report/{index.html, report.md, figures/} from the evaluation results.

Run from the repository root: `python stages/report.py`. It prints one line per step (`report: …`)
and, last, `Report: <absolute path of index.html>`.
"""

import sys
from pathlib import Path

from pipeline.core.config import ConfigError, load_section
from pipeline.core.paths import REPORT_DIR
from pipeline.core.store import StoreError
from pipeline.report import ReportError, build_report
from pipeline.report.params import ReportParams


def main() -> int:
    try:
        params: ReportParams = load_section("report")
        index = build_report(Path.cwd(), REPORT_DIR, params, log=lambda line: print(line, flush=True))
    except (ReportError, ConfigError, StoreError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    print(f"Report: {index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
