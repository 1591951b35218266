"""The Pareto set of a frontier, and `--pick`: which point to deploy.

A point is a dict with at least ``name``, ``speedup`` (measured, against the dense graph)
and ``mse`` (test). A point is on the Pareto set when no other point is at least as fast
and at least as accurate, and strictly better in one of the two.

`--pick` takes conditions joined by commas, each ``METRIC OP VALUE``:
  METRIC: mse | mae | speedup | params (the kept fraction)
  OP:     <= | >= | < | >
  VALUE:  a number, or a reference (dense_ft, dense_zs: the dense model's test metric,
          fine-tuned or zero-shot), optionally times a factor: ``mse<=dense_ft*1.02``.
Among the points that satisfy every condition, the fastest wins when a condition bounds
an error (mse/mae); otherwise the most accurate wins. No point satisfying them: None.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from tsprune.errors import bad_arg

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_METRICS = ("mse", "mae", "speedup", "params")
_REFS = ("dense_ft", "dense_zs")
_COND = re.compile(r"^\s*(mse|mae|speedup|params)\s*(<=|>=|<|>)\s*"
                   r"(?:(dense_ft|dense_zs)(?:\s*\*\s*([0-9.eE+-]+))?|([0-9.eE+-]+))\s*$")
ALLOWED = ("conditions 'METRIC OP VALUE' joined by commas: METRIC mse|mae|speedup|params, OP <=|>=|<|>, "
           "VALUE a number or dense_ft|dense_zs[*factor], e.g. 'mse<=dense_ft' or 'speedup>=2'")


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    ref: str | None = None   # dense_ft | dense_zs, or None for a plain number
    value: float = 1.0       # the number, or the factor of ref

    def bound(self, refs: dict) -> float | None:
        if self.ref is None:
            return self.value
        r = refs.get(self.ref, {}).get(self.metric)
        return None if r is None else r * self.value

    def holds(self, point: dict, refs: dict) -> bool:
        b, v = self.bound(refs), point.get(self.metric)
        return b is not None and v is not None and _OPS[self.op](v, b)


def parse_pick(text: str) -> tuple[Condition, ...]:
    """'mse<=dense_ft, speedup>=2' -> conditions; bad text -> UserError naming --pick."""
    conds = []
    for part in str(text).split(","):
        m = _COND.match(part)
        if not m:
            raise bad_arg("--pick", text, ALLOWED)
        metric, op, ref, factor, number = m.groups()
        try:
            value = float(factor) if ref and factor else (1.0 if ref else float(number))
        except ValueError:
            raise bad_arg("--pick", text, ALLOWED) from None
        if ref and metric not in ("mse", "mae"):
            raise bad_arg("--pick", text, f"{ref} only with mse or mae ({ALLOWED})")
        conds.append(Condition(metric, op, ref, value))
    return tuple(conds)


def pareto(points: list[dict]) -> list[str]:
    """Names of the points on the Pareto set of (speedup up, mse down), fastest first."""
    def dominated(p):
        return any(q is not p and q["speedup"] >= p["speedup"] and q["mse"] <= p["mse"]
                   and (q["speedup"] > p["speedup"] or q["mse"] < p["mse"]) for q in points)
    front = [p for p in points if not dominated(p)]
    return [p["name"] for p in sorted(front, key=lambda p: -p["speedup"])]


def pick(points: list[dict], conds: tuple[Condition, ...], refs: dict) -> dict | None:
    """The point to deploy (see the module docstring), or None."""
    ok = [p for p in points if all(c.holds(p, refs) for c in conds)]
    if not ok:
        return None
    if any(c.metric in ("mse", "mae") and c.op in ("<=", "<") for c in conds):
        return max(ok, key=lambda p: (p["speedup"], -p["mse"]))
    return min(ok, key=lambda p: (p["mse"], -p["speedup"]))
