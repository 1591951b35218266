"""Shared benchmark plumbing for every bench/bench_*.py file (pytest-benchmark).

Fixtures
- ``measure(fn, group=, name=, work=, unit=, baseline=False, rounds=)``: time
  ``fn`` with pytest-benchmark (one benchmark per test) and add a row to the
  report. ``work`` is the amount done per call in ``unit`` (samples, bytes:
  bytes are shown as GB/s); the row marked ``baseline`` is the denominator of
  its group's ratios.
- ``bench_report``: the session report itself, for rows timed another way
  (``bench_report.add(group, name, seconds, ...)``).

At the end of the session a table per group prints each row's median and
minimum time, the derived rate (from the median) and ``baseline time / row
time`` for both (higher is faster). On a shared, loaded machine the minimum
is the better estimate of a kernel's own cost.
Run: ``pytest bench/bench_ops.py`` (add ``--benchmark-json out.json`` for raw data).

``pytest bench/`` runs the speed benchmarks (kernels, scoring, latency: minutes). The
long accuracy and memory benchmarks are skipped unless selected by marker:
``pytest bench/ -m accuracy`` (zero-shot on ETT, 10-20 min) and
``pytest bench/ -m memory`` (full-size TimesFM 2.5, 6-8 min per case).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest


@dataclass
class Row:
    group: str
    name: str
    seconds: float  # median
    work: Optional[float] = None
    unit: Optional[str] = None
    baseline: bool = False
    min_seconds: Optional[float] = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, group: str, name: str, seconds: float, *, work: Optional[float] = None,
            unit: Optional[str] = None, baseline: bool = False, min_seconds: Optional[float] = None) -> None:
        """One row: median `seconds` per call (and the minimum, if known)."""
        self.rows.append(Row(group, name, seconds, work, unit, baseline, min_seconds))

    def lines(self) -> list[str]:
        out: list[str] = []
        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(r.group, []).append(r)
        for group, rows in groups.items():
            base = next((r for r in rows if r.baseline), None)
            out.append(f"[{group}]" + (f"  ratio = {base.name} time / row time" if base else ""))
            width = max(len(r.name) for r in rows)
            out.append(f"  {'':<{width}}  {'median':>10}     {'min':>10}     {'rate (median)':>16}  "
                       f"{'ratio med':>9}  {'ratio min':>9}")
            for r in rows:
                rmin = r.min_seconds if r.min_seconds is not None else r.seconds
                bmin = None if base is None else (base.min_seconds or base.seconds)
                ratio = f"{base.seconds / r.seconds:8.2f}x  {bmin / rmin:8.2f}x" if base else ""
                out.append(f"  {r.name:<{width}}  {r.seconds * 1e3:10.3f} ms  {rmin * 1e3:10.3f} ms  "
                           f"{_rate(r):>16}  {ratio}")
        return out


def _rate(r: Row) -> str:
    if r.work is None or r.unit is None:
        return ""
    per_s = r.work / r.seconds
    if r.unit == "bytes":
        return f"{per_s / 1e9:.2f} GB/s"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M{r.unit}/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k{r.unit}/s"
    return f"{per_s:.1f} {r.unit}/s"


_REPORT = Report()


@pytest.fixture(scope="session")
def bench_report() -> Report:
    return _REPORT


@pytest.fixture
def measure(benchmark, bench_report) -> Callable:
    def run(fn: Callable, *, group: str, name: str, work: Optional[float] = None,
            unit: Optional[str] = None, baseline: bool = False, rounds: int = 20):
        benchmark.group = group
        benchmark.name = name
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=2)
        stats = benchmark.stats.stats
        bench_report.add(group, name, stats.median, work=work, unit=unit, baseline=baseline, min_seconds=stats.min)
        return result

    return run


LONG_MARKERS = {"accuracy": "zero-shot accuracy on ETT, 10-20 min",
                "memory": "full-size model memory, 6-8 min per case"}


def pytest_collection_modifyitems(config, items):
    """Skip the long benchmarks unless ``-m`` names their marker."""
    expr = config.getoption("markexpr") or ""
    for item in items:
        for marker, what in LONG_MARKERS.items():
            if item.get_closest_marker(marker) is not None and marker not in expr:
                item.add_marker(pytest.mark.skip(reason=f"{what}; run with -m {marker}"))


def pytest_terminal_summary(terminalreporter):
    lines = _REPORT.lines()
    if lines:
        terminalreporter.section("benchmark summary")
        for line in lines:
            terminalreporter.write_line(line)
