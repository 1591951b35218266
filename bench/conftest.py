"""Shared benchmark plumbing for every bench/bench_*.py file (pytest-benchmark).

Fixtures
- ``measure(fn, group=, name=, work=, unit=, baseline=False, rounds=)``: time
  ``fn`` with pytest-benchmark (one benchmark per test) and add a row to the
  report. ``work`` is the amount done per call in ``unit`` (samples, bytes:
  bytes are shown as GB/s); the row marked ``baseline`` is the denominator of
  its group's ratios.
- ``bench_report``: the session report itself, for rows timed another way
  (``bench_report.add(group, name, seconds, ...)``).

At the end of the session a table per group prints each row's median time,
its derived rate and ``baseline time / row time`` (higher is faster).
Run: ``pytest bench/bench_ops.py`` (add ``--benchmark-json out.json`` for raw data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest


@dataclass
class Row:
    group: str
    name: str
    seconds: float
    work: Optional[float] = None
    unit: Optional[str] = None
    baseline: bool = False


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, group: str, name: str, seconds: float, *, work: Optional[float] = None,
            unit: Optional[str] = None, baseline: bool = False) -> None:
        self.rows.append(Row(group, name, seconds, work, unit, baseline))

    def lines(self) -> list[str]:
        out: list[str] = []
        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(r.group, []).append(r)
        for group, rows in groups.items():
            base = next((r for r in rows if r.baseline), None)
            out.append(f"[{group}]" + (f"  ratio = {base.name} time / row time" if base else ""))
            width = max(len(r.name) for r in rows)
            for r in rows:
                rate = _rate(r)
                ratio = f"{base.seconds / r.seconds:8.2f}x" if base else ""
                out.append(f"  {r.name:<{width}}  {r.seconds * 1e3:10.3f} ms  {rate:>16}  {ratio}")
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
        bench_report.add(group, name, benchmark.stats.stats.median, work=work, unit=unit, baseline=baseline)
        return result

    return run


def pytest_terminal_summary(terminalreporter):
    lines = _REPORT.lines()
    if lines:
        terminalreporter.section("benchmark summary (medians)")
        for line in lines:
            terminalreporter.write_line(line)
