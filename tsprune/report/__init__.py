"""Reports of a `tsprune prune` run: report.json (stable keys), report.md and a
self-contained report.html; plus the pipeline's helpers for them (sample forecasts,
ONNX Runtime latency)."""
from .html import render_html  # noqa: F401
from .latency import ort_latency  # noqa: F401
from .samples import forecast_samples  # noqa: F401
from .writer import render_markdown, write_reports  # noqa: F401
