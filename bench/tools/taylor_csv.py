"""Write the Taylor half-hourly electricity demand series as a CSV that `tsprune prune` reads.

The data ships inside the `pmdarima` package on PyPI (MIT licence; `pmdarima.datasets.load_taylor`):
half-hourly electricity demand in England and Wales, in megawatts, from Monday 5 June 2000 to
Sunday 27 August 2000 (4,032 half-hours), provided by James W. Taylor and discussed in Taylor (2003),
"Short-term electricity demand forecasting using double seasonal exponential smoothing", Journal of
the Operational Research Society 54, 799-805. The same series is `taylor` in R's `forecast` package.

The package holds only the values; the timestamps are rebuilt from the documented start and the
half-hourly step. Nothing of the data is committed to this repository.

    pip install pmdarima
    python bench/tools/taylor_csv.py /tmp/taylor.csv
"""
from __future__ import annotations

import argparse
import os
import sys

START = "2000-06-05 00:00"  # Monday 5 June 2000, the first half-hour (pmdarima's docstring)
STEP = "30min"
LENGTH = 4032  # 12 weeks of half-hours


def frame():
    import pandas as pd
    from pmdarima.datasets import load_taylor

    values = load_taylor(as_series=False)
    if len(values) != LENGTH:
        raise SystemExit(f"pmdarima's taylor has {len(values)} values, expected {LENGTH}")
    dates = pd.date_range(START, periods=len(values), freq=STEP)
    return pd.DataFrame({"date": dates, "demand_mw": values})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="CSV to write (must not exist)")
    a = p.parse_args(argv)
    if os.path.exists(a.out):
        print(f"out: {a.out} exists; choose a new path (this tool never overwrites)", file=sys.stderr)
        return 2
    df = frame()
    tmp = a.out + ".part"
    df.to_csv(tmp, index=False)
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(df)} rows, {df['date'].iloc[0]} .. {df['date'].iloc[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
