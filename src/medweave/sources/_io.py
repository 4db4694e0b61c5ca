"""Reading flat files (CSV, TSV, Parquet) with errors that name the file, row and column."""

from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from medweave.errors import InputError

__all__ = ["data_row", "parse_dates", "read_frame", "require_columns"]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def read_frame(path: Path, *, what: str = "table") -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file into pandas; ids and codes stay text in CSVs."""
    if not path.exists():
        raise InputError(f"{path}: {what} file not found; check the path in the config")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "," if suffix == ".csv" else "\t"
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: cannot read the {what} ({exc}); is it a valid {suffix} file?"
        ) from None
    raise InputError(
        f"{path}: unsupported {what} format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
    )


def require_columns(frame: pd.DataFrame, columns: list[str], *, path: Path, key: str) -> None:
    """Raise if a column named in the config is absent, suggesting the nearest one."""
    for col in columns:
        if col not in frame.columns:
            close = difflib.get_close_matches(col, [str(c) for c in frame.columns], n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it has {list(frame.columns)[:12]}"
            raise InputError(f"{path}: no column {col!r} (config key {key}); {hint}")


def data_row(path: Path, position: int) -> str:
    """How to name row ``position`` (0-based) of a file in a message: CSV line or Parquet row."""
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return f"line {position + 2}"  # 1-based, after the header line
    return f"row {position + 1}"


def parse_dates(
    values: pd.Series, *, path: Path, column: str, allow_missing: bool = False
) -> pd.Series:
    """Parse a date column; an unparsable or (unless allowed) empty value names its row."""
    parsed = pd.to_datetime(values, errors="coerce")
    bad = parsed.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: {column} {values.iloc[pos]!r} is not a date; "
            "use YYYY-MM-DD"
        )
    if not allow_missing and parsed.isna().any():
        pos = int(parsed.isna().to_numpy().nonzero()[0][0])
        raise InputError(f"{path} {data_row(path, pos)}: {column} is empty; every row needs a date")
    today = pd.Timestamp.today().normalize()
    future = parsed > today
    if future.any():
        pos = int(future.to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: {column} {parsed.iloc[pos].date()} is in the future; "
            "check the date or its format"
        )
    return parsed
