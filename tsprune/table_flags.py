"""The flags that name a table and its columns, shared by `tsprune prune` (and the
commands built on it) and `tsprune export`. Light on purpose: `tsprune --help` builds
every subcommand's parser, so nothing here may import torch or pandas."""
from __future__ import annotations

SPLIT_HELP = ("'ett' (12/4/4 months), ratios like 0.7,0.1,0.2, or 'auto' (default): "
              "ett when the table holds 20 months, else 0.7,0.1,0.2")


def add_table_flags(p, *, data_help: str, of: str = "") -> None:
    """--data, --target, --date-col and --split on the parser ``p``; ``of`` names the
    table in the help texts (e.g. " of --data") where --data is optional."""
    p.add_argument("--data", help=data_help)
    p.add_argument("--target", nargs="+", metavar="COL",
                   help=f"columns{of} to forecast (default: every numeric column)")
    p.add_argument("--date-col", help=f"the date column{of} (default: detected)")
    p.add_argument("--split", default="auto", help=f"split{of}: {SPLIT_HELP}")
