"""The separator and the decimal mark of a CSV file, from its first lines.

European spreadsheets write ``date;a;b`` with ``1,5`` for one and a half. pandas' default
reads such a file as a single text column, which must never be trained on. ``csv_format``
picks the separator that splits every sampled line into the same number (> 1) of fields
(``,`` ``;`` tab ``|``), and the decimal comma when the separator is not a comma and
numbers such as ``1,5`` appear. A file that no separator splits consistently is read
with pandas' default and checked afterwards (``check_parse``).
"""
from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

from tsprune.errors import UserError

SEPARATORS = (",", ";", "\t", "|")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+([eE][+-]?\d+)?$")
_DECIMAL_POINT = re.compile(r"^[+-]?\d*\.\d+([eE][+-]?\d+)?$")
_SAMPLE_LINES = 50


def _head(path: Path, kind_gz: bool) -> list[str]:
    opener = gzip.open if kind_gz else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            lines = []
            for line in f:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) >= _SAMPLE_LINES:
                    break
            return lines
    except (OSError, EOFError, ValueError):
        return []  # pandas reports an unreadable file itself


def _fields(lines: list[str], sep: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO("\n".join(lines)), delimiter=sep))


def csv_format(path: Path) -> dict:
    """Keyword arguments for pandas.read_csv: {"sep": ..., "decimal": ...} ({} = default)."""
    lines = _head(path, str(path).lower().endswith(".gz"))
    if len(lines) < 2:
        return {}
    best = None
    for sep in SEPARATORS:
        rows = _fields(lines, sep)
        counts = {len(r) for r in rows}
        if len(counts) == 1 and (n := counts.pop()) > 1 and (best is None or n > best[1]):
            best = (sep, n, rows)
    if best is None:
        return {}
    sep, _, rows = best
    out = {"sep": sep}
    if sep != ",":
        cells = [c.strip() for r in rows[1:] for c in r]
        commas = sum(bool(_DECIMAL_COMMA.match(c)) for c in cells)
        points = sum(bool(_DECIMAL_POINT.match(c)) for c in cells)
        if commas and commas >= points:
            out["decimal"] = ","
            if points:  # both marks among the numbers: a thousands separator, or a mix
                raise UserError(f"data: {str(path)!r} mixes decimal commas ({commas} numbers like "
                                f"'1,5') and decimal points ({points}); use one decimal mark")
    return out


def check_parse(df, path: Path) -> None:
    """UserError when a table read with pandas' default looks like a misparse: one column
    whose name holds another separator (``date;a;b``)."""
    if df.shape[1] == 1:
        name = str(df.columns[0])
        for sep in SEPARATORS[1:]:
            if sep in name:
                raise UserError(f"data: {str(path)!r} was read as one column {name!r}; its "
                                f"separator {sep!r} is not used on every line the same way; "
                                "fix the file or save it with commas")
