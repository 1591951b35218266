"""The Python API mirrors the CLI: frozen configs whose fields the `tsprune prune` flags
map to one to one, the docs/api.md example run verbatim, and a real tiny `tsprune prune`
run checked for --quiet, --log-file, log.jsonl and report.html."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
from helpers import TINY_TIMESFM25, synthetic_frame

import tsprune
from tsprune.cli import build_parser, main, prune_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# flag dest -> config field name, where they differ
ALIASES = {"data": "path", "finetune_epochs": "epochs", "search_ratios": "ratios",
           "search_emas": "emas", "search_calib_samples": "calib_samples",
           "search_val_samples": "val_samples", "recover": "distill", "distill_weight": "distill"}
# fields without a flag (documented in docs/api.md)
API_ONLY = {"prune.min_steps", "prune.patience", "finetune.grad_clip", "command"}
# `--frontier` and the flags that only work with it set FrontierConfig fields (the run's
# settings are RunConfig's): flag -> FrontierConfig field, and a test value
FRONTIER = {"--frontier": ("budgets", "speedup=2,3"), "--pick": ("pick", "speedup>=2"),
            "--latency-batch": ("latency_batch", "8"), "--latency-threads": ("threads", "2"),
            "--no-int8": ("int8", None), "--no-paper-plan": ("paper", None)}
# values for flags whose type says too little
VALUES = {"--model": "some/model", "--target": "x1", "--date-col": "date", "--split": "0.6,0.2,0.2",
          "--lr": "0.001,0.0003", "--search-ratios": "0.1,0.2", "--search-emas": "0.3",
          "--log-file": "run.log", "--expert-threshold": "0.05", "--budget": "params=0.5",
          "--criterion": "taylor", "--distill-weight": "0.5"}


def _prune_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["prune"]


def _flat(obj, prefix: str = "") -> dict:
    """Dataclass fields as {"prune.ratio": value, ...}, recursively."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_flat(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = v
    return out


def test_public_api_names_resolve_and_are_documented():
    for name in tsprune.__all__:
        obj = getattr(tsprune, name)
        if callable(obj):
            assert obj.__doc__, f"tsprune.{name} has no docstring"
    text = DOCS.read_text()
    for name in ("load", "prepare", "DataConfig", "score", "PruneConfig", "apply", "finetune",
                 "FinetuneConfig", "evaluate", "export_onnx", "run", "RunConfig"):
        assert name in tsprune.__all__ and f"{name}" in text


def test_api_names_are_lazy_and_never_shadowed_by_submodules():
    """`import tsprune` alone does not import torch (the API is lazy), and no API name is
    also a submodule's name (importing the submodule would rebind the package attribute)."""
    import pkgutil
    import subprocess
    import sys
    code = ("import sys, tsprune; assert 'torch' not in sys.modules, 'torch imported'\n"
            "from tsprune.evaluation import evaluate\n"
            "assert tsprune.evaluate is evaluate and callable(tsprune.evaluate), tsprune.evaluate\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    submodules = {m.name for m in pkgutil.iter_modules(tsprune.__path__)}
    assert not submodules & set(tsprune.__all__)


def test_configs_are_frozen_dataclasses(tmp_path):
    from tsprune.search import SearchConfig
    cfgs = [tsprune.DataConfig(None), tsprune.PruneConfig(), tsprune.FinetuneConfig(), SearchConfig(),
            tsprune.RunConfig(out=str(tmp_path / "o"), data=tsprune.DataConfig(None))]
    for c in cfgs:
        assert dataclasses.is_dataclass(c) and type(c).__dataclass_params__.frozen
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(c, dataclasses.fields(c)[0].name, None)


def test_every_prune_flag_maps_to_a_config_field(tmp_path):
    for name in ("a.csv", "b.csv"):
        synthetic_frame(50).to_csv(tmp_path / name, index=False)
    base_argv = ["prune", "--data", str(tmp_path / "a.csv"), "--out", str(tmp_path / "out")]
    parser = _prune_parser()

    def config(argv):
        a = build_parser().parse_args(argv)
        a.argv = argv
        flat = _flat(prune_config(a))
        assert flat.pop("command") == "tsprune " + " ".join(argv)  # filled by the CLI, not a flag
        return flat

    def value(action):
        if action.option_strings[0] in VALUES:
            return [VALUES[action.option_strings[0]]]
        if action.option_strings[0] == "--data":
            return [str(tmp_path / "b.csv")]
        if action.option_strings[0] == "--out":
            return [str(tmp_path / "other")]
        if action.nargs == 0:
            return []
        if action.choices:
            return [next(c for c in action.choices if c != action.default and [c] != action.default)]
        if action.type is int:
            return [str((action.default or 2) + 1)]
        if action.type is float:
            return [str(action.default / 2 if action.default else 0.3)]
        raise AssertionError(f"no test value for {action.option_strings[0]}: add it to VALUES")

    reached = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        if flag in FRONTIER:
            continue  # test_every_frontier_flag_maps_to_a_frontier_field
        if flag == "--full":  # the one profile flag: every sampling default of tsprune.cli.FULL
            from tsprune.cli import FULL, QUICK
            new = config(base_argv + ["--full"])
            for name in QUICK:
                assert {k: v for k, v in new.items() if k.endswith("." + name)} and \
                    all(v == FULL[name] for k, v in new.items() if k.endswith("." + name)), name
            continue
        field = ALIASES.get(action.dest, action.dest)
        # --search-* flags only matter with --search; --finetune only after --no-finetune
        pre = ["--search"] if flag.startswith("--search-") else []
        if flag in ("--criterion", "--no-cost-aware"):  # only with --budget
            pre = ["--budget", "params=0.5"]
        pre = ["--recover", "distill"] if flag == "--distill-weight" else pre  # a weight of distillation
        twins = [a.option_strings[0] for a in parser._actions if a.dest == action.dest and a is not action]
        base = config(base_argv + pre)
        new = config(base_argv + pre + [flag, *value(action)])
        if new == base and twins:  # --finetune is the default: set it after --no-finetune
            base = config(base_argv + pre + twins[:1])
            new = config(base_argv + pre + twins[:1] + [flag, *value(action)])
        changed = {k for k in set(base) | set(new)
                   if base.get(k, "<absent>") != new.get(k, "<absent>")}
        assert changed, f"{flag} changes no config field"
        for path in changed:
            assert path.split(".")[-1] == field or path == field or path.startswith(field + "."), \
                f"{flag} changed {path}, expected a field named {field!r}"
        reached |= changed
    with_search = config(base_argv + ["--search"])
    unreached = set(with_search) - reached - API_ONLY
    assert not unreached, f"config fields without a flag: {sorted(unreached)} (add a flag or list as API-only)"
    assert API_ONLY - {"command"} <= set(with_search)


def test_every_frontier_flag_maps_to_a_frontier_field(tmp_path):
    from tsprune.cli import frontier_config
    parser = _prune_parser()
    base_argv = ["--out", str(tmp_path / "o"), "--frontier", "speedup=2"]

    def config(argv):
        a = parser.parse_args(argv)
        a.argv = argv
        return {f.name: getattr(fc, f.name) for fc in [frontier_config(a)]
                for f in dataclasses.fields(fc) if f.name != "run"}

    base = config(base_argv)
    for flag, (field, value) in FRONTIER.items():
        argv = [x for x in base_argv if flag != "--frontier" or x not in ("--frontier", "speedup=2")]
        new = config(argv + [flag] + ([value] if value is not None else []))
        changed = {k for k in base if base[k] != new[k]}
        assert changed == {field}, (flag, changed)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert set(FRONTIER) <= flags


def test_docs_list_every_prune_flag_and_api_only_field():
    text = DOCS.read_text()
    table = set(re.findall(r"`(--[a-z0-9-]+)`", text))
    flags = {s for a in _prune_parser()._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    assert flags <= table, f"flags missing from docs/api.md: {sorted(flags - table)}"
    for f in API_ONLY:
        cls = {"prune": "PruneConfig", "finetune": "FinetuneConfig"}.get(f.split(".")[0], "RunConfig")
        assert f"`{cls}.{f.split('.')[-1]}`" in text


def test_docs_example_runs(tmp_path, monkeypatch, capfd):
    """The runnable block of docs/api.md, verbatim, with progress bars on."""
    text = DOCS.read_text()
    m = re.search(r"<!-- runnable -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/api.md has no <!-- runnable --> python block"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("TSPRUNE_QUIET", raising=False)
    ns: dict = {"__name__": "__docs__"}
    t0 = time.time()
    exec(compile(m.group(1), str(DOCS), "exec"), ns)
    seconds = time.time() - t0
    out, err = capfd.readouterr()
    assert re.search(r"[\d,]+ -> [\d,]+ parameters", out) and "ONNX" in out
    assert ns["pruned"].num_params() < ns["model"].num_params()
    assert ns["forecast"].point.shape == (3, 16)
    assert set(ns["result"]["by_horizon"]) == {8, 16} or set(ns["result"]["by_horizon"]) == {"8", "16"}
    assert (ns["out"] / "model.onnx").exists() and tsprune.load(ns["out"] / "model").pruned
    # progress bars with count, rate and ETA for scoring, fine-tuning and evaluation
    for desc in ("prune epoch 1/1", "finetune lr=0.001", "evaluate"):
        assert re.search(re.escape(desc) + r".*\d+/\d+ \[[\d:]+<[\d:?]+, +[\d.?]+ ?\w+/s", err), desc
    print(f"docs example: {seconds:.1f} s")
    assert seconds < 300  # ~10-30 s on an idle 2-core machine; generous for shared CI


def test_progress_bar_shows_rate_and_eta_and_quiet_silences_it(capsys):
    from tsprune.progress import progress, set_quiet
    for _ in progress(range(50), desc="work", unit="win"):
        pass
    err = capsys.readouterr().err
    assert re.search(r"work.*50/50 \[[\d:]+<[\d:]+, +[\d.]+ ?win/s\]", err), err
    set_quiet(True)
    try:
        for _ in progress(range(50), desc="work"):
            pass
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One tiny `tsprune prune --quiet --log-file ... --export onnx` through main()."""
    d = tmp_path_factory.mktemp("cli")
    tsprune.from_config(dict(TINY_TIMESFM25)).save(d / "tiny")
    synthetic_frame(1000).to_csv(d / "data.csv", index=False)
    argv = ["prune", "--model", str(d / "tiny"), "--data", str(d / "data.csv"), "--split", "0.6,0.2,0.2",
            "--context", "64", "--horizon", "16", "--max-epochs", "2", "--macro-batch", "128",
            "--calib-samples", "256", "--val-samples", "64", "--train-samples", "128", "--lr", "1e-3",
            "--export", "onnx", "--quiet", "--log-file", str(d / "run.log"), "--out", str(d / "out")]
    import contextlib
    import io
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    return d, rc, out.getvalue(), err.getvalue()


def test_cli_run_quiet_and_log_file(cli_run):
    d, rc, out, err = cli_run
    assert rc == 0, err[-2000:]
    assert out.startswith(f"wrote {d / 'out'}: params")
    assert "/s]" not in err and "it/s" not in err, "--quiet printed a progress bar"
    assert "done in" not in err, "--quiet printed the phase log"
    log = (d / "run.log").read_text().splitlines()
    for phase in ("load", "zero_shot", "score", "finetune_pruned", "samples",
                  "export_onnx", "onnx_latency"):
        # the phase runner's lines, once each: no duplicated handlers
        assert sum(bool(re.search(rf"INFO {phase} \(\d+/\d+\) \.\.\.$", ln)) for ln in log) == 1, phase
        assert any(re.search(rf"INFO {phase} done in [\d.]+s ", ln) for ln in log), phase


def test_cli_run_jsonl_log(cli_run):
    d, rc, _, _ = cli_run
    recs = [json.loads(ln) for ln in (d / "out" / "log.jsonl").read_text().splitlines()]
    assert all("t" in r and "phase" in r for r in recs)
    steps = [r for r in recs if r["phase"] == "prune" and "step" in r]
    epochs = [r for r in recs if r["phase"] == "prune" and "val_loss" in r]
    ft = [r for r in recs if r["phase"] == "finetune_pruned"]
    report = json.loads((d / "out" / "report.json").read_text())
    # the log holds exactly what the report's pruning history holds, in order
    hist = report["prune"]["history"]
    assert [{k: v for k, v in r.items() if k not in ("t", "phase")} for r in recs if r["phase"] == "prune"] == hist
    assert len(steps) >= 1 and {"train_loss", "sparsity", "alive_channels"} <= set(steps[0])
    # one validation per pruning epoch, after the dense model's (epoch 0, sparsity 0)
    assert epochs[0]["epoch"] == 0 and epochs[0]["sparsity"] == 0.0
    assert len(epochs) - 1 == len({r["epoch"] for r in steps}) >= 1
    assert [r["sparsity"] for r in steps] == sorted(r["sparsity"] for r in steps)
    assert ft and {"lr", "epoch", "train_loss", "val_loss"} <= set(ft[0])
    assert recs[-1]["phase"] == "summary" and recs[-1]["metrics"]["zero_shot"]["mse"] > 0


def test_cli_run_report_html(cli_run):
    from test_report import images
    d, rc, _, _ = cli_run
    r = json.loads((d / "out" / "report.json").read_text())
    lat = r["onnx"]["latency_ms"]
    assert lat["1"]["median_ms"] > 0 and lat["64"]["median_ms"] > 0 and lat["1"]["runs"] >= 1
    s = r["samples"]
    assert len(s["windows"]) == 4 and s["history"] == 48 and set(s["forecasts"]) == {"dense", "pruned"}
    assert s["forecasts"]["pruned"]["levels"] and len(s["forecasts"]["dense"]["point"][0]) == 16
    html = (d / "out" / "report.html").read_text()
    assert set(images(html)) == {"forecasts of sample test windows", "per-layer structure, dense vs pruned",
                                 "pruning curve"}
    assert "ORT CPU latency, batch 64" in html and r["command"].startswith("tsprune prune --model")
    assert r["command"] in html.replace("&#x27;", "'") and r["versions"]["torch"] in html


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The Python block of README.md, verbatim (bundled model and data), in a fresh folder."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    m = re.search(r"## Python API.*?```python\n(.*?)```", readme.read_text(), re.S)
    assert m, "README.md has no Python API block"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TSPRUNE_QUIET", "1")
    ns: dict = {"__name__": "__readme__"}
    exec(compile(m.group(1), "README.md", "exec"), ns)
    assert ns["pruned"].num_params() < ns["model"].num_params()
    assert (tmp_path / "out" / "model.onnx").exists()
    assert torch_equal_reload(tmp_path / "out" / "model", ns["pruned"])


def torch_equal_reload(path, model) -> bool:
    import torch
    x = torch.randn(2, 512)
    return torch.equal(tsprune.load(path).forecast(x, 96).point, model.forecast(x, 96).point)
