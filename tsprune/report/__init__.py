"""Reports of a `tsprune prune` run: report.json (stable keys) and report.md."""
from .writer import render_markdown, write_reports  # noqa: F401
