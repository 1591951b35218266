"""tsprune: structured pruning of time-series foundation models (prune-then-finetune).

The Python API mirrors the CLI:

    import tsprune
    model = tsprune.load("nano")                                   # or a local HF directory
    data = tsprune.prepare(tsprune.DataConfig("ETTh1.csv.gz", horizon=96))
    train, val, test = data.windows("train"), data.windows("val"), data.windows("test")
    plan = tsprune.score(model, train, val, tsprune.PruneConfig(ratio=0.1))
    pruned = tsprune.apply(model, plan)
    tsprune.finetune(pruned, train, val, tsprune.FinetuneConfig(lr=(3e-5,)))
    print(tsprune.evaluate(pruned, test))
    tsprune.export_onnx(pruned, "model.onnx", context=512, horizon=96)
"""
import importlib

__version__ = "0.1.0"

_API = {
    "load": ("tsprune.model", "load"),
    "from_config": ("tsprune.model", "from_config"),
    "TSModel": ("tsprune.model", "TSModel"),
    "DataConfig": ("tsprune.data", "DataConfig"),
    "prepare": ("tsprune.data", "prepare"),
    "prepare_frame": ("tsprune.data", "prepare_frame"),
    "PruneConfig": ("tsprune.prune", "PruneConfig"),
    "Plan": ("tsprune.prune", "Plan"),
    "score": ("tsprune.prune", "score"),
    "apply": ("tsprune.prune", "apply"),
    "FinetuneConfig": ("tsprune.train", "FinetuneConfig"),
    "finetune": ("tsprune.train", "finetune"),
    "evaluate": ("tsprune.evaluation", "evaluate"),
    "export_onnx": ("tsprune.export", "export_onnx"),
    "RunConfig": ("tsprune.pipeline", "RunConfig"),
    "run": ("tsprune.pipeline", "run"),
    "default_data_path": ("tsprune.pipeline", "default_data_path"),
    "ett_path": ("tsprune.data", "ett_path"),
    "UserError": ("tsprune.errors", "UserError"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    # lazy: `import tsprune` (and `tsprune --help`) must not load torch
    if name in _API:
        mod, attr = _API[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tsprune' has no attribute {name!r}")
