"""bench/bench_memory_families.py: its markdown table, from a small results dict (no model is built)."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_memory_families.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_memory_families", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_has_a_row_per_family_measured_or_skipped():
    s = _script()
    mb = 1 << 20
    phase = lambda name, sec, peak: {"phase": name, "seconds": sec, "peak": peak * mb}  # noqa: E731
    results = {
        "ttm": {"family": "ttm", "checkpoint": "ttm-r2", "skipped": "tsfm_public is not installed"},
        "moirai": {"family": "moirai", "checkpoint": "moirai-small", "params": 13_827_528,
                   "weights_bytes": 53 * mb, "rss_after_import": 250 * mb, "context": 512,
                   "phases": [phase("load", 0.08, 363), phase("forward", 0.06, 322),
                              phase("forward_again", 0.05, 324), phase("fwd_bwd", 0.12, 350)]},
    }
    lines = s.markdown_table(results).splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "skipped: tsfm_public is not installed" in lines[2]
    assert "13.83M" in lines[3] and "0.08 (363 MB)" in lines[3] and "0.06 / 0.05 (324 MB)" in lines[3]
    assert "0.12 (350 MB)" in lines[3]
