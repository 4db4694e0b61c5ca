"""Flat files read explicitly: encodings, delimiters, duplicated columns, ISO dates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medweave.errors import InputError
from medweave.sources._io import date_problems, parse_dates, read_frame


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_csv_columns_stay_text_and_empty_cells_are_nan(tmp_path: Path) -> None:
    frame = read_frame(_write(tmp_path, "a.csv", "id,x,code\n007,1.50,0012\nP2,,NA\n"))
    assert frame["id"].tolist() == ["007", "P2"]  # leading zeros kept
    assert frame["x"].iloc[0] == "1.50" and np.isnan(frame["x"].iloc[1])
    assert frame["code"].iloc[0] == "0012" and np.isnan(frame["code"].iloc[1])
    assert frame.attrs == {"encoding": "utf-8", "delimiter": "comma"}


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        ("\ufeffid,x\nP1,2\n".encode(), "utf-8 with BOM"),
        ("id,x\nP1,2\n".encode("utf-16"), "utf-16 with BOM"),
    ],
)
def test_byte_order_marks_are_read_and_said(tmp_path: Path, content: bytes, encoding: str) -> None:
    frame = read_frame(_write(tmp_path, "b.csv", content))
    assert list(frame.columns) == ["id", "x"]  # no BOM glued to the first name
    assert frame.attrs["encoding"] == encoding


@pytest.mark.parametrize(
    ("name", "content", "delimiter"),
    [
        ("c.csv", "id;x;y\nP1;2,5;3\nP2;1;1\n", "semicolon"),
        ("c.csv", "id|x\nP1|2\n", "vertical bar"),
        ("c.tsv", "id\tx\nP1\t2\n", "tab"),
        ("c.txt", "id\tx\nP1\t2\n", "tab"),
    ],
)
def test_delimiter_is_found(tmp_path: Path, name: str, content: str, delimiter: str) -> None:
    frame = read_frame(_write(tmp_path, name, content))
    assert frame.columns[0] == "id" and len(frame.columns) > 1
    assert frame.attrs["delimiter"] == delimiter


def test_duplicated_columns_are_refused_before_any_renaming(tmp_path: Path) -> None:
    path = _write(tmp_path, "g.csv", "gene,G0,G1,G0\nP1,1,2,3\n")
    with pytest.raises(
        InputError, match=r"g.csv: column name 'G0' appears 2 times \(columns 2, 4\)"
    ):
        read_frame(path)


def test_duplicated_parquet_columns_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table([[1], [2]], names=["a", "a"]), path)
    with pytest.raises(InputError, match="column name 'a' appears 2 times"):
        read_frame(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("id,x\nP1,2\nP2,3,4\n", r"line 3: 3 fields where the header has 2"),
        (b"id,x\nP1,\xe9t\xe9\n", r"byte 8 is not valid UTF-8"),
        ("", r"the file is empty"),
        ("a;b|c\n1;2|3\n", r"cannot tell the delimiter"),
    ],
)
def test_unreadable_text_is_one_clear_line(
    tmp_path: Path, content: str | bytes, match: str
) -> None:
    with pytest.raises(InputError, match=match) as err:
        read_frame(_write(tmp_path, "bad.txt", content))
    assert "\n" not in str(err.value)


def test_paths_with_spaces_and_accents(tmp_path: Path) -> None:
    folder = tmp_path / "données cliniques"
    folder.mkdir()
    frame = read_frame(_write(folder, "mesures été.csv", "id,x\nP1,2\n"))
    assert frame.shape == (1, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-03-01", "2020-03-01"),
        ("20200301", "2020-03-01"),
        ("2020-03-01T23:30:00+05:00", "2020-03-01"),  # the local calendar date counts
        ("2020-03-01 08:00", "2020-03-01"),
    ],
)
def test_iso_dates_are_accepted(text: str, expected: str) -> None:
    dates, problem = date_problems(pd.Series([text], dtype=object))
    assert str(dates.iloc[0].date()) == expected and problem.iloc[0] == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("01/03/2020", "is ambiguous: day/month (2020-03-01) or month/day (2020-01-03)?"),
        ("13.03.2020", "is not an ISO date; write it as YYYY-MM-DD (2020-03-13?)"),
        ("03/13/2020", "is not an ISO date; write it as YYYY-MM-DD (2020-03-13?)"),
        ("2020-02-30", "is not a valid calendar date"),
        ("March 1st", "is not a date; use YYYY-MM-DD"),
    ],
)
def test_other_date_forms_are_refused_with_the_reason(text: str, words: str) -> None:
    _, problem = date_problems(pd.Series(["2020-01-01", text], dtype=object))
    assert problem.iloc[0] == "" and words in problem.iloc[1]


def test_typed_dates_pass_and_parse_dates_names_the_line(tmp_path: Path) -> None:
    typed = pd.Series(pd.to_datetime(["2020-01-01"]).tz_localize("Europe/Paris"))
    assert str(date_problems(typed)[0].iloc[0]) == "2020-01-01 00:00:00"
    path = tmp_path / "t.csv"
    with pytest.raises(InputError, match=r"t.csv line 3: when '05/06/2020' is ambiguous"):
        parse_dates(pd.Series(["2020-01-01", "05/06/2020"]), path=path, column="when")
