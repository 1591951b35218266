"""Follow the prune config through a `tsprune prune` run: which tsprune files handle it, and
how often the flow comes back to the orchestrator (issue 16's measure).

    python bench/tools/trace_config.py SRC_TREE -- prune --out /tmp/x [prune flags]

A function "handles the config" when, at its call, one of its arguments is the run's
RunConfig or one of its parts (its DataConfig, PruneConfig, FinetuneConfig, SearchConfig), or
holds one of them one attribute deep (a Job). The tsprune files of those calls are listed in
order. Two counts of "returns to the orchestrator" are printed:

* upward calls: a lower layer (any tsprune file but the orchestrator and the CLI) calls a
  function of the orchestrator, handing it the config. The orchestrator is ``pipeline.py``
  and, where it exists, the phase runner ``phases.py`` that issue 16 asked for: the runner
  calling the job's declared phases is the orchestration itself, not a return to it.
* sequence returns: in the list of config-handling calls, a call in ``pipeline.py`` right
  after one in another file. This also counts the orchestrator calling layer A, then layer
  B (A's call "returns"), so it grows with every layer the job uses, and with every phase
  a runner dispatches.

Runs the CLI from SRC_TREE (not the installed package).
"""
from __future__ import annotations

import sys


def main() -> int:
    src, rest = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, src)
    import tsprune
    from tsprune.pipeline import RunConfig
    root = tsprune.__file__.rsplit("/", 1)[0] + "/"

    parts = ("DataConfig", "PruneConfig", "FinetuneConfig", "SearchConfig")

    def part(x) -> bool:  # the RunConfig or one of its parts (by class name: any tree)
        return isinstance(x, RunConfig) or (hasattr(type(x), "__dataclass_fields__") and
                                            type(x).__name__ in parts)

    def holds(v) -> bool:
        if part(v):
            return True
        d = getattr(v, "__dict__", None)
        return isinstance(d, dict) and any(part(x) for x in d.values())

    seq: list[str] = []
    orchestrator = {root + "pipeline.py", root + "phases.py"}
    upward: list[str] = []

    def prof(frame, event, _arg):
        if event != "call":
            return
        f = frame.f_code.co_filename
        if not f.startswith(root):
            return
        code = frame.f_code
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if any(holds(frame.f_locals.get(n)) for n in names):
            rel = f[len(root) - len("tsprune/"):]
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            if (f in orchestrator and caller.startswith(root) and caller not in orchestrator
                    and caller != root + "cli.py"):
                upward.append(f"{caller[len(root):]} -> {rel[len('tsprune/'):]}:{code.co_name}")
            if not seq or seq[-1] != rel:
                seq.append(rel)

    from tsprune.cli import main as cli
    sys.setprofile(prof)
    try:
        rc = cli(rest)
    finally:
        sys.setprofile(None)
    files = sorted(set(seq))
    back = sum(1 for a, b in zip(seq, seq[1:]) if b == "tsprune/pipeline.py" and a != b)
    print(f"exit {rc}; tree {src}")
    print(f"files handling the config: {len(files)}")
    for f in files:
        print(f"  {f}")
    print(f"upward calls into the orchestrator: {len(upward)}")
    for u in upward:
        print(f"  {u}")
    print(f"sequence returns to tsprune/pipeline.py: {back}")
    print("sequence: " + " > ".join(s.replace("tsprune/", "") for s in seq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
