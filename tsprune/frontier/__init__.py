"""The accuracy-latency frontier: pruned, recovered and exported models at several budgets,
measured side by side (job), the Pareto set and `--pick` (select), the report (report).

Light on purpose: `tsprune --help` imports the CLI's flag parsers, so the job (torch,
onnx) loads only when used."""
from __future__ import annotations


def __getattr__(name):
    if name in ("FrontierConfig", "budget_list", "phases", "run"):
        from . import job  # lazy: the job pulls torch and pandas (see above)
        return getattr(job, name)
    raise AttributeError(name)
