"""Reports: an analysis rendered as one self-contained HTML page (images embedded)."""

from weightdna.report.html import render_analysis_html

__all__ = ["render_analysis_html"]
