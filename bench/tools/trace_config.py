"""Follow the prune config through a `tsprune prune` run: which tsprune files handle it, and
how often the flow comes back to the orchestrator (issue 16's measure).

    python bench/tools/trace_config.py SRC_TREE -- prune --out /tmp/x [prune flags]

A function "handles the config" when, at its call, one of its arguments is the run's
RunConfig or one of its parts (its DataConfig, PruneConfig, FinetuneConfig, SearchConfig), or
holds one of them one attribute deep (a Job). The tsprune files of those
calls are listed in order; a "return to the orchestrator" is a call in tsprune/pipeline.py
after a call in another file. Runs the CLI from SRC_TREE (not the installed package).
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
    print(f"returns to tsprune/pipeline.py: {back}")
    print("sequence: " + " > ".join(s.replace("tsprune/", "") for s in seq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
