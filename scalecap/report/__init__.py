"""HTML report of a run (``scalecap report RUN.jsonl -o report.html``); see docs/report.md.

    from scalecap.report import build_report, Prices
    summary = build_report("run.jsonl", "report.html", prices=Prices.parse(["captioner=0.2:0.8"]))
"""

from .build import (
                    DEFAULT_CHUNK_SIZE,
                    DEFAULT_SINGLE_FILE_LIMIT,
                    Histogram,
                    ReportError,
                    ReportSummary,
                    StageTotals,
                    build_report,
                    json_for_html,
)
from .data import UnreadableLine
from ..pricing import Price, PriceError, Prices

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_SINGLE_FILE_LIMIT", "Histogram", "Price", "PriceError", "Prices",
    "ReportError", "ReportSummary", "StageTotals", "UnreadableLine", "build_report", "json_for_html",
]
