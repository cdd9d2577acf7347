"""The report stage: tables, figures and one self-contained HTML page (plus Markdown)."""

from pipeline.report.build import build_report
from pipeline.report.eval_files import ReportError

__all__ = ["ReportError", "build_report"]
