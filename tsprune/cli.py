"""The `tsprune` command line: a thin layer over the Python API.

Subcommands: prune (the whole job), eval, export, inspect, pretrain.
User errors print one line and exit with code 2; a failed write (disk full, permission
denied: any OSError) prints one line and exits with code 1 (tsprune.safety); Ctrl-C exits 130.
"""
from __future__ import annotations

import os

# OpenMP workers sleep instead of spinning between parallel regions. Must be set before
# torch loads its OpenMP runtime; on a shared CPU spinning made every step several times
# slower (measured: a tiny end-to-end run took 140 s with the default, 24 s with PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tsprune import __version__  # noqa: E402
from tsprune.errors import UserError, bad_arg  # noqa: E402
from tsprune.export.args import add_arguments as add_export_arguments  # noqa: E402
from tsprune.progress import is_quiet, set_quiet  # noqa: E402
from tsprune.runlog import log_to_file, log_to_stderr  # noqa: E402
from tsprune.table_flags import add_table_flags  # noqa: E402

EXIT_USER = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UserError(f"{self.prog}: {message}")

    def _get_values(self, action, arg_strings):
        # Python < 3.12 drops a lone "--" value (`--context=--`) and stores [] unconverted
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one argument, got '--'")
        return super()._get_values(action, arg_strings)


def _floats(name):
    def parse(s):
        try:
            vals = tuple(float(x) for x in str(s).split(",") if x.strip())
        except ValueError:
            raise UserError(f"{name}: got {s!r}; expected a number or a comma-separated list") from None
        if not vals:
            raise UserError(f"{name}: got {s!r}; expected at least one number")
        return vals
    return parse


def _add_data_args(p, *, horizon_default=96):
    add_table_flags(p, data_help="CSV, CSV.gz or parquet file (default: the bundled demo dataset)")
    p.add_argument("--context", type=int, default=512, help="context length in rows (default: 512)")
    p.add_argument("--horizon", type=int, default=horizon_default, help=f"forecast horizon (default: {horizon_default})")
    p.add_argument("--stride", type=int, default=1, help="window stride (default: 1)")
    p.add_argument("--season", type=int, help="seasonal period for seasonal naive (default: from the frequency)")
    p.add_argument("--test-stride", type=int, default=1,
                   help="evaluate every N-th test window, for quick runs (default: 1, every window: "
                        "the protocol; the report says when it was not)")


def _data_config(a):
    # lazy (here and in every command below): these pull torch (and pandas), which
    # `tsprune --help` must not load
    from tsprune.data import DataConfig
    from tsprune.pipeline import default_data_path
    path = a.data
    split = a.split
    if path is None:
        path = default_data_path()
        if path is None:
            raise UserError("--data: no dataset given and no bundled demo dataset is installed")
    elif not os.path.exists(path):
        raise UserError(f"--data: {path!r} does not exist")
    return DataConfig(path=path, target=tuple(a.target) if a.target else None, date_col=a.date_col,
                      split=split, context=a.context, horizon=a.horizon, stride=a.stride, season=a.season,
                      test_stride=getattr(a, "test_stride", 1))


#: `tsprune prune` without --full: window subsamples chosen by measurement so that the
#: README's first command takes a few minutes on 2 CPU cores (bench/RESULTS.md, "Main job");
#: a flag given explicitly always wins. Test metrics use every test window either way.
QUICK = {"calib_samples": 4096, "val_samples": 512, "train_samples": 4096, "lr_probe_steps": 15}
FULL = {"calib_samples": None, "val_samples": 4096, "train_samples": None, "lr_probe_steps": 50}


def _profile(a, name: str):
    """The value of a sampling flag: as given, else the --full or quick default."""
    value = getattr(a, name)
    return value if value is not None else (FULL if a.full else QUICK)[name]


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="tsprune", description="Prune, fine-tune and export time-series foundation models.")
    ap.add_argument("--version", action="version", version=f"tsprune {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    p = sub.add_parser("prune", help="prune + fine-tune + evaluate + export (the whole job)")
    p.add_argument("--model", default="nano", help="bundled model name or local HF directory (default: nano)")
    _add_data_args(p)
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--ratio", type=float, help="pruning ratio r per epoch, in (0, 1) (default: the family's)")
    p.add_argument("--ema", type=float, default=0.5, help="EMA alpha of importance scores (default: 0.5)")
    p.add_argument("--max-epochs", type=int, help="pruning epochs at most (default: the family's)")
    p.add_argument("--max-sparsity", type=float, help="cap on parameter sparsity, in (0, 1)")
    p.add_argument("--macro-batch", type=int, default=8192, help="samples per pruning step (default: 8192)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per backward pass (default: 64)")
    p.add_argument("--calib-samples", type=int,
                   help=f"subsample train windows for scoring (default: {QUICK['calib_samples']}; --full: all)")
    p.add_argument("--val-samples", type=int,
                   help=f"validation windows (default: {QUICK['val_samples']}; --full: {FULL['val_samples']})")
    p.add_argument("--full", action="store_true",
                   help="score, fine-tune and validate on every window (the paper's protocol; minutes "
                        "to hours) instead of the quick subsamples; test metrics use every window either way")
    p.add_argument("--scorer", choices=["fused", "reference"], default="fused",
                   help="importance path: fused kernels (default) or the masked-Linear reference")
    p.add_argument("--expert-threshold", type=float,
                   help="MoE models: delete experts routed to at most this fraction of tokens "
                        "(default: the family's, 0.01 for Time-MoE)")
    p.add_argument("--drop-blocks", type=int, default=0, metavar="K",
                   help="first remove K whole blocks (depth pruning), chosen greedily on validation "
                        "windows; K below the model's number of blocks (default: 0)")
    p.add_argument("--depth-criterion", choices=["measured", "fisher"], default="measured",
                   help="how --drop-blocks ranks blocks: the validation loss with the block skipped "
                        "(default) or its Taylor-Fisher gate estimate")
    p.add_argument("--budget", metavar="KIND=V",
                   help="prune to a budget instead of stopping on validation: params=F or flops=F "
                        "(the fraction kept, 0<F<1; FLOPs of the exported forecast) or speedup=S (flops=1/S)")
    p.add_argument("--criterion", default="taylor_fisher",
                   help="with --budget, how units are ranked: taylor_fisher (the paper's, default), "
                        "taylor (first-order |sum w dL/dw|) or magnitude (weight L2 norm); with "
                        "--frontier a comma-separated list, compared side by side")
    p.add_argument("--no-cost-aware", dest="cost_aware", action="store_false", default=True,
                   help="with --budget, rank units by importance alone (default: importance / cost)")
    p.add_argument("--prune-hidden", dest="hidden", action="store_true", default=False,
                   help="also prune the hidden (residual-stream) width: one mask over the model's "
                        "d_model channels, ranked with heads, V dims and FFN neurons and sliced from "
                        "every layer at once (TimesFM 2.5 and 2.0, PatchTST, Timer-XL; see docs/families.md)")
    p.add_argument("--align", type=int, default=1, metavar="N",
                   help="with --budget or --frontier, round every kept FFN width to a multiple of N, the "
                        "budget still met (16: ONNX Runtime's CPU GEMM block; default: 1, no rounding)")
    p.add_argument("--frontier", metavar="BUDGETS",
                   help="one pruned, recovered and exported model per budget (e.g. speedup=1.5,2,3,4 or "
                        "params=0.5,0.3), each measured (test MSE/MAE, ONNX Runtime latency at batch 1 and "
                        "--latency-batch, fp32 and int8); writes frontier.md/.json/.png to --out")
    p.add_argument("--pick", metavar="COND",
                   help="with --frontier: the model copied to OUT/deploy, e.g. 'mse<=dense_ft' (the fastest "
                        "as accurate as dense fine-tuning) or 'speedup>=2' (the most accurate that fast); errors are "
                        "judged on the validation windows, so the test figures stay honest")
    p.add_argument("--latency-batch", type=int, default=64,
                   help="with --frontier: the batch size speed-ups are measured and budgets met at (default: 64)")
    p.add_argument("--latency-threads", type=int, default=1,
                   help="with --frontier: ONNX Runtime intra-op threads when timing (default: 1)")
    p.add_argument("--no-int8", dest="int8", action="store_false", default=True,
                   help="with --frontier: skip the int8 (dynamic quantization) graphs")
    p.add_argument("--no-paper-plan", dest="paper_plan", action="store_false", default=True,
                   help="with --frontier: skip the paper's validation-stopped plan (one more point)")
    p.add_argument("--search", action="store_true",
                   help="choose (ratio, ema) by validation of the pruned model, then lr after fine-tuning")
    p.add_argument("--search-ratios", type=_floats("--search-ratios"), help="ratio grid (default: the family's)")
    p.add_argument("--search-emas", type=_floats("--search-emas"), default=(0.2, 0.5, 0.8),
                   help="EMA alpha grid (default: 0.2,0.5,0.8)")
    p.add_argument("--search-calib-samples", type=int, default=8192, help="train windows per search trial")
    p.add_argument("--search-val-samples", type=int, default=2048, help="validation windows per search trial")
    p.add_argument("--finetune", dest="do_finetune", action="store_true", default=True,
                   help="fine-tune the pruned model (default)")
    p.add_argument("--no-finetune", dest="do_finetune", action="store_false",
                   help="skip fine-tuning: the pruned model is saved and exported as pruned")
    p.add_argument("--recover", choices=["finetune", "distill", "both"], default="finetune",
                   help="how the pruned model recovers: finetune (default: on the target) or distill "
                        "(on the target and the dense teacher's forecasts, mixed by --distill-weight); "
                        "with --frontier also both (side by side, at equal wall time)")
    p.add_argument("--distill-weight", metavar="W",
                   help="with --recover distill: the teacher term's mixing weight, 'auto' (default: "
                        "probed over 0, 0.5, 1 on validation like the lr) or a number in [0, 1]")
    p.add_argument("--compare-finetune", action="store_true",
                   help="also fine-tune the dense model (with --recover distill it may be the teacher)")
    p.add_argument("--lr", type=_floats("--lr"), help="learning rate, or a comma-separated grid chosen by validation")
    p.add_argument("--finetune-epochs", type=int,
                   help="fine-tuning epochs at most (default: 10; the paper: 1)")
    # measured on the main job: the best weights come within the first ~100 steps, so a
    # validation every 100 steps with patience 3 overshot by 300 steps (bench/RESULTS.md)
    p.add_argument("--val-every", type=int, default=25,
                   help="fine-tuning: validate every N optimizer steps and when the run stops (default: 25; "
                        "0: at every epoch end instead)")
    p.add_argument("--finetune-patience", dest="patience", type=int, default=2,
                   help="fine-tuning: stop after N validations without improvement (default: 2)")
    p.add_argument("--plateau-decays", type=int, default=0,
                   help="fine-tuning: when patience is spent, go back to the best weights and go on at "
                        "a tenth of the learning rate, up to N times (default: 0, stop)")
    p.add_argument("--finetune-ema", dest="weight_ema", type=float, default=0.0,
                   help="fine-tuning: validate, keep and return an exponential moving average of the "
                        "weights with this decay, e.g. 0.99 (default: 0, off)")
    p.add_argument("--finetune-budget", dest="time_budget_s", type=float,
                   help="fine-tuning wall-time budget in seconds per fine-tuned model, lr probes "
                        "included (default: none)")
    p.add_argument("--lr-probe-steps", type=int,
                   help="steps each lr of the grid trains before the best gets the full run "
                        f"(default: {QUICK['lr_probe_steps']}; --full: {FULL['lr_probe_steps']}; 0: a full run per lr)")
    p.add_argument("--val-metric", choices=["forecast_mse", "loss"], default="forecast_mse",
                   help="fine-tuning validation: forecast_mse at --horizon, rolled out past the output "
                        "patch (default), or loss (the family's loss over its output patch: the paper)")
    p.add_argument("--train-samples", type=int,
                   help=f"subsample train windows for fine-tuning (default: {QUICK['train_samples']}; --full: all)")
    p.add_argument("--no-dlinear", dest="dlinear", action="store_false", help="skip the DLinear baseline")
    p.add_argument("--export", action="append", default=[], choices=["onnx"], help="export format")
    p.add_argument("--export-model", choices=["auto", "tsfm", "dlinear"], default="auto",
                   help="what --export writes to model.onnx: auto (default: the model the report "
                        "recommends by validation MSE), tsfm (the pruned model) or dlinear")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds window subsampling, batch order and DLinear (default: 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to compute (default: cuda when available; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="print each phase and its time")
    p.add_argument("--log-file", help="also write the log to this file")

    e = sub.add_parser("eval", help="evaluate a model on a dataset's test split")
    e.add_argument("--model", default="nano")
    _add_data_args(e)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--quiet", action="store_true")

    x = sub.add_parser("export", help="export a model to ONNX (fp32/fp16/int8) or a Triton model repository")
    add_export_arguments(x)

    i = sub.add_parser("inspect", help="per-layer heads, widths and parameters of a model or ONNX graph")
    i.add_argument("path", help="model directory, bundled name, or .onnx file")
    i.add_argument("--json", action="store_true")

    rp = sub.add_parser("reproduce", help="the paper's comparison on ETT (zero-shot, fine-tune, prune-then-finetune, baselines)")
    rp.add_argument("--datasets", default="ETTh1,ETTh2,ETTm1,ETTm2", help="comma-separated ETT names or files")
    rp.add_argument("--horizons", default="96,192,336,720")
    rp.add_argument("--model", default="nano")
    rp.add_argument("--context", type=int, default=512)
    rp.add_argument("--out", default="bench/results")
    rp.add_argument("--search-ratios", type=_floats("--search-ratios"))
    rp.add_argument("--search-emas", type=_floats("--search-emas"), default=(0.2, 0.5, 0.8))
    rp.add_argument("--search-calib-samples", type=int, default=8192)
    rp.add_argument("--search-val-samples", type=int, default=2048)
    rp.add_argument("--lr", type=_floats("--lr"), help="fine-tuning lr grid (default: as `tsprune prune`, "
                    "the family's grid extended to 10x its largest rate)")
    rp.add_argument("--ft-train-samples", type=int, help="subsample fine-tuning windows (default: all)")
    rp.add_argument("--ft-val-samples", type=int, default=4096,
                    help="validation windows of fine-tuning, at the longest horizon (default: 4096)")
    rp.add_argument("--split", default="auto", help="split of every dataset: 'ett', ratios like 0.7,0.1,0.2, "
                    "or 'auto' (default): ett for a 20-month table, else 0.7,0.1,0.2")
    rp.add_argument("--baselines", default="seasonal_naive,dlinear,patchtst")
    rp.add_argument("--seed", type=int, default=0, help="seeds subsampling, batch order and baselines (default: 0)")
    rp.add_argument("--force", action="store_true", help="rerun datasets that already have results")
    rp.add_argument("--phases", help="run only these phases (comma-separated; several processes "
                    "can share a dataset this way, then a run without --phases renders the report)")
    rp.add_argument("--quiet", action="store_true")

    try:  # lazy and optional: the other subcommands work without tsprune.pretrain
        from tsprune.pretrain import add_cli_arguments
    except ImportError:
        add_cli_arguments = None
    if add_cli_arguments is not None:
        t = sub.add_parser("pretrain", help="pretrain a small TSFM on the synthetic corpus")
        add_cli_arguments(t)
        t.add_argument("--out", required=True, help="output directory (HF model dir + checkpoint/)")
        t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
        t.add_argument("--quiet", action="store_true")
    return ap


def _distill(a):
    """FinetuneConfig.distill of --recover and --distill-weight: "off" for finetune, the
    weight (default "auto") for distill."""
    if a.recover != "distill":
        if a.distill_weight is not None:
            raise bad_arg("--distill-weight", a.distill_weight, "a weight only with --recover distill")
        return "off"
    if a.distill_weight == "off":
        raise bad_arg("--distill-weight", "off", "auto or a weight in [0, 1] (--recover finetune: no teacher)")
    return "auto" if a.distill_weight is None else a.distill_weight


def prune_config(a):
    """The RunConfig of parsed `tsprune prune` arguments: each flag sets one field."""
    # lazy: torch (see _data_config)
    from tsprune.pipeline import RunConfig
    from tsprune.prune import PruneConfig
    from tsprune.search import SearchConfig
    from tsprune.train import FinetuneConfig  # lazy, as above
    return RunConfig(
        out=a.out, data=_data_config(a), model=a.model,
        prune=PruneConfig(ratio=a.ratio, ema=a.ema, max_epochs=a.max_epochs, macro_batch=a.macro_batch,
                          batch_size=a.batch_size, max_sparsity=a.max_sparsity,
                          calib_samples=_profile(a, "calib_samples"), val_samples=_profile(a, "val_samples"),
                          scorer=a.scorer, seed=a.seed, expert_threshold=a.expert_threshold,
                          budget=a.budget, criterion=a.criterion, cost_aware=a.cost_aware,
                          drop_blocks=a.drop_blocks, depth_criterion=a.depth_criterion,
                          hidden=a.hidden, align=a.align),
        finetune=FinetuneConfig(lr=a.lr, epochs=a.finetune_epochs, batch_size=a.batch_size,
                                train_samples=_profile(a, "train_samples"), val_samples=_profile(a, "val_samples"), seed=a.seed,
                                patience=a.patience, plateau_decays=a.plateau_decays, weight_ema=a.weight_ema, val_every=a.val_every, time_budget_s=a.time_budget_s,
                                lr_probe_steps=_profile(a, "lr_probe_steps"), val_metric=a.val_metric,
                                distill=_distill(a)),
        search=SearchConfig(ratios=a.search_ratios, emas=a.search_emas,
                            calib_samples=a.search_calib_samples,
                            val_samples=a.search_val_samples) if a.search else None,
        do_finetune=a.do_finetune, compare_finetune=a.compare_finetune, export=tuple(a.export),
        export_model=a.export_model,
        opset=a.opset, dlinear=a.dlinear, seed=a.seed,
        command="tsprune " + " ".join(shlex.quote(s) for s in getattr(a, "argv", sys.argv[1:])), log_file=a.log_file,
        quiet=a.quiet, verbose=a.verbose, resume=a.resume, device=a.device)


def frontier_config(a):
    """The FrontierConfig of `tsprune prune --frontier ...`: the prune job's settings plus
    the frontier's flags (--criterion is a list there)."""
    from tsprune.frontier import FrontierConfig, budget_list  # lazy: the frontier job pulls torch and pandas
    if a.budget is not None:
        raise bad_arg("--budget", a.budget, "no --budget with --frontier (the frontier's budgets are its list)")
    criteria = tuple(c.strip() for c in str(a.criterion).split(",") if c.strip())
    recover = {"both": "distill"}.get(a.recover, a.recover)  # the weight flag's rule (_distill)
    run_cfg = prune_config(argparse.Namespace(**{**vars(a), "criterion": "taylor_fisher", "recover": recover}))
    return FrontierConfig(run=run_cfg, budgets=budget_list(a.frontier), criteria=criteria,
                          recoveries=_recoveries(a), pick=a.pick, latency_batch=a.latency_batch,
                          threads=a.latency_threads, int8=a.int8, paper=a.paper_plan)


def _recoveries(a) -> tuple[str, ...]:
    return ("finetune", "distill") if a.recover == "both" else (a.recover,)


def _cmd_frontier(a) -> int:
    from tsprune.frontier import run  # lazy: the frontier job pulls torch and pandas
    r = run(frontier_config(a))
    print(f"wrote {a.out}: {len(r['points'])} models; Pareto set: {', '.join(r['pareto']) or '-'}"
          + (f"; picked {r['picked']} (deploy/)" if r.get("pick") and r.get("picked") else "")
          + ("; no model satisfies --pick" if r.get("pick") and not r.get("picked") else ""))
    return 0


def _cmd_prune(a) -> int:
    from tsprune.pipeline import run  # lazy: torch (see _data_config)
    if a.frontier is not None:
        return _cmd_frontier(a)
    if a.pick is not None:
        raise bad_arg("--pick", a.pick, "only with --frontier")
    if a.align != 1 and a.budget is None:
        raise bad_arg("--align", a.align, "1 without --budget or --frontier (widths are rounded under a budget only)")
    if a.recover == "both":
        raise bad_arg("--recover", "both", "finetune or distill (both: only with --frontier)")
    r = run(prune_config(a))
    if not r:  # a torchrun worker (rank > 0): rank 0 reports
        return 0
    m = r["metrics"]
    best = m.get("pruned_finetuned") or m["pruned"]
    print(f"wrote {a.out}: params {r['params']['dense']:,} -> {r['params']['pruned']:,} "
          f"(sparsity {r['sparsity']:.1%}); test MSE zero-shot {m['zero_shot']['mse']:.4f}, "
          f"pruned{'+fine-tuned' if m.get('pruned_finetuned') else ''} {best['mse']:.4f}"
          + (f"; ONNX max abs err {r['onnx']['max_abs_err']:.1e}" if r.get("onnx") else ""))
    if r.get("recommendation"):
        print(r["recommendation"]["headline"]
              + (f" model.onnx holds {r['onnx'].get('model', 'tsfm')}." if r.get("onnx") else ""))
    return 0


def _cmd_eval(a) -> int:
    # lazy: torch and pandas (see _data_config)
    from tsprune.data import prepare
    from tsprune.evaluation import evaluate
    from tsprune.model import load
    data = prepare(_data_config(a))
    model = load(a.model)
    test = data.windows("test", stride=a.test_stride if a.test_stride > 1 else None)
    res = evaluate(model, test, [a.horizon], desc="evaluate")
    res["notes"] = list(data.notes)
    res["by_horizon"] = {str(k): v for k, v in res.get("by_horizon", {}).items()}
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"test MSE {res['mse']:.4f}  MAE {res['mae']:.4f}  ({res['windows']} windows, horizon {a.horizon})")
        for n in data.notes:
            print(f"note: {n}")
    return 0


MAX_LENGTH = 65536  # export: context and horizon, in steps (the graph's batch axis has the same cap)


def _check_writable_file(path: str, arg: str) -> None:
    """UserError now, before any work, when the file ``path`` cannot be created (a directory
    there, a parent that is a file, /proc...). Leaves nothing behind."""
    p = Path(path).absolute()
    if p.is_dir():
        raise UserError(f"{arg}: {path!r} is a directory; expected a file path")
    created, d = [], p.parent
    while not d.exists() and d != d.parent:
        created.append(d)
        d = d.parent
    probe = p.with_name(f".{p.name}.probe-{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{arg}: cannot write to {path!r} ({e.strerror or e})") from None
    finally:
        for c in created:  # deepest first
            try:
                c.rmdir()
            except OSError:
                break


def _cmd_export(a) -> int:
    # lazy: torch (see _data_config); tsprune.atomic only so that --help skips it
    from tsprune.atomic import check_out
    from tsprune.export.command import run as run_export
    from tsprune.export.command import variant_config
    from tsprune.model import load  # lazy, as above
    if a.format == "onnx" and not a.out.endswith(".onnx"):
        raise bad_arg("--out", a.out, "a path ending in .onnx")
    for name, value in (("--context", a.context), ("--horizon", a.horizon)):
        if not 1 <= value <= MAX_LENGTH:
            raise bad_arg(name, value, f"a positive integer (at most {MAX_LENGTH})")
    cfg = variant_config(a)  # bad --precision/--quantize combinations fail before any work
    if a.format == "onnx":
        check_out(os.path.dirname(os.path.abspath(a.out)) or ".", replace=False)
        _check_writable_file(a.out, "--out")
    else:
        check_out(a.out)
    if a.data is not None and not os.path.exists(a.data):
        raise UserError(f"--data: {a.data!r} does not exist")
    model = load(a.model)
    model.check_context(a.context)
    return run_export(a, model, cfg, _data_config)


def _cmd_inspect(a) -> int:
    from tsprune.inspect import inspect_path  # lazy: only `inspect` needs it; --help skips it
    print(inspect_path(a.path, as_json=a.json))
    return 0


def _cmd_reproduce(a) -> int:
    # lazy: torch and pandas (see _data_config)
    from tsprune.reproduce import ReproduceConfig, run
    from tsprune.search import SearchConfig
    try:
        horizons = tuple(int(h) for h in a.horizons.split(","))
    except ValueError:
        raise bad_arg("--horizons", a.horizons, "comma-separated integers") from None
    cfg = ReproduceConfig(
        datasets=tuple(d for d in a.datasets.split(",") if d), horizons=horizons, model=a.model,
        context=a.context, out=a.out,
        search=SearchConfig(ratios=a.search_ratios, emas=a.search_emas,
                            calib_samples=a.search_calib_samples, val_samples=a.search_val_samples),
        lrs=a.lr, ft_train_samples=a.ft_train_samples, ft_val_samples=a.ft_val_samples, split=a.split,
        baselines=tuple(b for b in a.baselines.split(",") if b), seed=a.seed, force=a.force,
        phases=tuple(p for p in a.phases.split(",") if p) if a.phases else None)
    from tsprune.safety import claim_dir  # lazy: keeps --help fast
    claim_dir(a.out, "reproduce")
    out = run(cfg, log=lambda m: print(m, flush=True))
    if len(out["results"]) == len(cfg.datasets):
        print(f"wrote {a.out}/accuracy.md")
    return 0


def _cmd_pretrain(a) -> int:
    # lazy: `run` loads torch and transformers on first use; safety: keeps --help fast
    from tsprune.pretrain import from_args, run
    from tsprune.safety import claim_dir
    claim_dir(a.out, "pretrain")
    run(from_args(a), a.out, resume=a.resume, progress=not a.quiet)
    return 0


def main(argv=None) -> int:
    """The CLI; returns the exit code. Process-wide state it sets (quiet progress bars) is
    restored on return, so in-process callers (tests, notebooks) are unaffected."""
    was_quiet = is_quiet()
    try:
        return _main(argv)
    finally:
        set_quiet(was_quiet)


def _main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        a = build_parser().parse_args(argv)
        a.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for the report
        set_quiet(getattr(a, "quiet", False))
        from tsprune.safety import check_command  # lazy: keeps --help fast
        check_command(a)  # outputs never overlap inputs nor replace what tsprune did not write
        logging.getLogger("tsprune").propagate = False
        with log_to_file(getattr(a, "log_file", None)), log_to_stderr(getattr(a, "verbose", False)):
            return {"prune": _cmd_prune, "eval": _cmd_eval, "export": _cmd_export,
                    "inspect": _cmd_inspect, "pretrain": _cmd_pretrain,
                    "reproduce": _cmd_reproduce}[a.cmd](a)
    except UserError as e:
        print(f"tsprune: error: {e}", file=sys.stderr)
        return EXIT_USER
    except ImportError as e:  # a missing optional dependency names its install command
        if "pip install" not in str(e):
            raise
        print(f"tsprune: error: {e}", file=sys.stderr)
        return EXIT_USER
    except RuntimeError as e:
        from tsprune.export import ExportError  # lazy: its module (onnx_export) pulls torch
        if not isinstance(e, ExportError):
            raise
        print(f"tsprune: error: export failed: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a failed write (disk full...) is one line, exit 1
        from tsprune.safety import EXIT_WRITE, as_os_error, describe_write_error  # lazy: keeps --help fast
        failed = as_os_error(e)
        if failed is None:
            raise
        print(f"tsprune: error: {describe_write_error(failed)}", file=sys.stderr)
        return EXIT_WRITE
    except KeyboardInterrupt:
        hint = " (rerun with --resume to continue from the last checkpoint)" if \
            getattr(locals().get("a"), "cmd", None) == "prune" else ""
        print(f"tsprune: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
