"""python -m tsprune.pretrain --out DIR [flags]: the same as `tsprune pretrain`.

Set OMP_WAIT_POLICY=PASSIVE in the environment on a shared CPU (see docs/pretraining.md).
"""
from __future__ import annotations

import argparse
import sys

from tsprune.errors import exit_status
from tsprune.pretrain import add_cli_arguments, from_args, run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsprune.pretrain",
                                 description="Pretrain a TimesFM 2.5 model on tsprune's synthetic corpus.")
    ap.add_argument("--out", required=True, help="output directory (Hugging Face model dir + checkpoint/)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    ap.add_argument("--no-progress", action="store_true")
    add_cli_arguments(ap)
    ns = ap.parse_args(argv)
    return exit_status(lambda: run(from_args(ns), ns.out, resume=ns.resume,
                                   progress=not ns.no_progress))


if __name__ == "__main__":
    sys.exit(main())
