"""Reading flat files (CSV, TSV, Parquet) with errors that name the file, row and column.

Nothing is guessed silently. A CSV/TSV file is read as text with a declared schema
(pyarrow, every column a string; each reader then converts its fields through its value
checks): its encoding (UTF-8, with or without a byte-order mark, or UTF-16 with one) and
its delimiter (``,`` ``\\t`` ``;`` ``|``) are found from the bytes and the header, and kept
in ``frame.attrs`` (``encoding``, ``delimiter``); duplicated column names are refused
before anything could rename them. Dates are ISO 8601 (``YYYY-MM-DD``, optionally with a
time, or ``YYYYMMDD``); ``01/03/2020`` is refused as ambiguous, with a message saying so.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from medweave.errors import InputError

__all__ = [
    "TABLE_SUFFIXES",
    "data_row",
    "date_problems",
    "parse_dates",
    "read_frame",
    "require_columns",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "vertical bar"}
_SNIFF_LINES = 50


def read_frame(path: Path, *, what: str = "table") -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file into pandas: CSV columns as text (None-free: NaN for
    empty cells), Parquet columns with their stored types."""
    if not path.exists():
        raise InputError(f"{path}: {what} file not found; check the path in the config")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a {what} file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, what=what)
    if suffix in _TEXT_SUFFIXES:
        return _read_text(path, what=what, suffix=suffix)
    raise InputError(
        f"{path}: unsupported {what} format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
    )


def _read_parquet(path: Path, *, what: str) -> pd.DataFrame:
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: cannot read the {what} ({_first_line(exc)}); is it a valid Parquet file?"
        ) from None
    _refuse_duplicates(names, path=path)
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: cannot read the {what} ({_first_line(exc)}); is it a valid Parquet file?"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _decode(path: Path, raw: bytes) -> tuple[str, str]:
    """The file's text and the encoding found (from a byte-order mark, else UTF-8)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding, body = "utf-8 with BOM", raw[3:]
        codec = "utf-8"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding, body, codec = "utf-16 with BOM", raw, "utf-16"
    else:
        encoding, body, codec = "utf-8", raw, "utf-8"
    try:
        return body.decode(codec), encoding
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: byte {exc.start} is not valid {codec.upper()} (the file has no "
            f"byte-order mark saying otherwise); save the file as UTF-8"
        ) from None


def _sniff_delimiter(path: Path, text: str, *, suffix: str) -> str:
    """The delimiter: the one the suffix implies when it splits the header, else the one
    candidate that splits the first lines into the same number (> 1) of fields."""
    lines = [ln for ln in text.splitlines()[:_SNIFF_LINES] if ln.strip()]
    if not lines:
        raise InputError(f"{path}: the file is empty; expected a header line and data rows")
    expected = {".csv": ",", ".tsv": "\t"}.get(suffix)

    def widths(delim: str) -> list[int]:
        return [len(row) for row in csv.reader(lines, delimiter=delim)]

    if expected is not None and widths(expected)[0] > 1:
        return expected
    splitting = []
    for delim in _DELIMITERS:
        w = widths(delim)
        if w[0] > 1 and all(x == w[0] for x in w):
            splitting.append(delim)
    if len(splitting) == 1:
        return splitting[0]
    if not splitting:
        # One column: the suffix's delimiter (or a comma) reads it as it is.
        return expected or ","
    names = " and ".join(_DELIMITERS[d] for d in splitting)
    raise InputError(
        f"{path}: cannot tell the delimiter: the header splits on {names} alike; "
        f"use commas in a .csv file or tabs in a .tsv file"
    )


def _refuse_duplicates(names: list[str], *, path: Path) -> None:
    counts = Counter(names)
    dup = [n for n in names if counts[n] > 1]
    if dup:
        first = dup[0]
        positions = [i + 1 for i, n in enumerate(names) if n == first]
        raise InputError(
            f"{path}: column name {first!r} appears {len(positions)} times (columns "
            f"{', '.join(map(str, positions))}); give each column its own name"
        )


def _read_text(path: Path, *, what: str, suffix: str) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({_first_line(exc)})") from None
    text, encoding = _decode(path, raw)
    delimiter = _sniff_delimiter(path, text, suffix=suffix)
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    header = [h.strip() for h in header]
    _refuse_duplicates(header, path=path)
    bad_rows: list[tuple[int | None, int, int]] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append((row.number, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowException as exc:
        # The library's message may quote a row's content: name the file only.
        kind = _first_line(exc).split(":")[0]
        raise InputError(f"{path}: cannot read the {what} as a CSV file ({kind})") from None
    if bad_rows:
        number, expected, actual = bad_rows[0]
        if number is None:  # find it with the csv module (it knows quoted newlines)
            reader = csv.reader(io.StringIO(text), delimiter=delimiter)
            number = next((reader.line_num for row in reader if row and len(row) != expected), None)
        line = f"line {number}" if number is not None else "a line"
        raise InputError(
            f"{path} {line}: {actual} fields where the header has {expected} "
            f"({_DELIMITERS[delimiter]}-delimited); quote values that hold the delimiter"
        )
    frame = table.to_pandas()
    frame = frame.astype(object).where(frame.notna(), np.nan)
    frame.attrs.update(encoding=encoding, delimiter=_DELIMITERS[delimiter])
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], *, path: Path, key: str) -> None:
    """Raise if a column named in the config is absent, suggesting the nearest one."""
    for col in columns:
        if col not in frame.columns:
            close = difflib.get_close_matches(col, [str(c) for c in frame.columns], n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it has {list(frame.columns)[:12]}"
            raise InputError(f"{path}: no column {col!r} (config key {key}); {hint}")


def data_row(path: Path, position: int) -> str:
    """How to name row ``position`` (0-based) of a file in a message: CSV line or Parquet row."""
    if path.suffix.lower() in _TEXT_SUFFIXES:
        return f"line {position + 2}"  # 1-based, after the header line
    return f"row {position + 1}"


_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_BASIC = re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$")
_DMY = re.compile(r"^(?P<a>\d{1,2})[/.\-](?P<b>\d{1,2})[/.\-](?P<y>\d{4})$")


def _not_iso(text: str) -> str:
    m = _DMY.match(text)
    if m is None:
        return "is not a date; use YYYY-MM-DD"
    a, b, y = int(m["a"]), int(m["b"]), m["y"]
    if a <= 12 and b <= 12 and a != b:
        return (
            f"is ambiguous: day/month ({y}-{b:02d}-{a:02d}) or month/day ({y}-{a:02d}-{b:02d})? "
            "write dates as YYYY-MM-DD"
        )
    day, month = (a, b) if a > 12 else (b, a)
    return f"is not an ISO date; write it as YYYY-MM-DD ({y}-{month:02d}-{day:02d}?)"


def date_problems(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(dates, problem)``: parsed dates (NaT where empty or bad) and per value the
    problem in words (``""`` when fine or empty). Typed date and datetime columns pass as
    they are (a time zone is dropped, keeping the local date and time); text must be ISO
    8601 (the offset is dropped: the local calendar date counts)."""
    ok = pd.Series("", index=values.index, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        dates = values
        if getattr(dates.dt, "tz", None) is not None:
            dates = dates.dt.tz_localize(None)
        return dates.astype("datetime64[ns]"), ok
    filled = values.dropna()
    if len(filled) and all(isinstance(v, dt.date) for v in filled):  # datetime.date objects
        return pd.to_datetime(values).astype("datetime64[ns]"), ok
    text = values.astype("string").str.strip()
    empty = (text.isna() | (text == "")).to_numpy(dtype=bool)
    iso = text.str.extract(_ISO)
    basic = text.str.extract(_BASIC)
    stamp = (iso["date"] + ("T" + iso["time"]).fillna("")).fillna(
        basic["y"] + "-" + basic["m"] + "-" + basic["d"]
    )
    dates = pd.to_datetime(stamp, errors="coerce", format="ISO8601")
    problem = ok.copy()
    no_form = stamp.isna().to_numpy(dtype=bool) & ~empty
    invalid = stamp.notna().to_numpy(dtype=bool) & dates.isna().to_numpy(dtype=bool)
    if no_form.any():
        problem[no_form] = "is not a date; use YYYY-MM-DD"
        first = int(np.flatnonzero(no_form)[0])  # the one a message quotes, in detail
        problem.iloc[first] = _not_iso(str(text.iloc[first]))
    problem[invalid] = "is not a valid calendar date; use YYYY-MM-DD"
    return pd.Series(dates.to_numpy(), index=values.index).astype("datetime64[ns]"), problem


def parse_dates(
    values: pd.Series, *, path: Path, column: str, allow_missing: bool = False
) -> pd.Series:
    """Parse a date column; an unparsable or (unless allowed) empty value names its row."""
    parsed, problem = date_problems(values)
    bad = (problem != "").to_numpy()
    if bad.any():
        pos = int(bad.nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: {column} {str(values.iloc[pos]).strip()!r} "
            f"{problem.iloc[pos]}"
        )
    if not allow_missing and parsed.isna().any():
        pos = int(parsed.isna().to_numpy().nonzero()[0][0])
        raise InputError(f"{path} {data_row(path, pos)}: {column} is empty; every row needs a date")
    today = pd.Timestamp.today().normalize() + pd.Timedelta(days=1)
    future = parsed >= today
    if future.any():
        pos = int(future.to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: {column} {parsed.iloc[pos].date()} is in the future; "
            "check the date or its format"
        )
    return parsed
