"""Broken inputs of the flat-table readers ``table`` and ``events`` and of flat files in
general (encodings, delimiters, duplicated columns, dates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medweave.testing.readers import BrokenInput


def _file(name: str, text: str | bytes, entry: dict[str, Any]) -> Any:
    def write(folder: Path) -> dict[str, Any]:
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return {"path": name, **entry}

    return write


_GOOD = "P1,1.5\nP2,2.0\nP3,0.5\n"  # lines 2-4: the broken row is line 5
_DATED = "patient_id,date,crp\nP1,2020-01-01,1.5\nP2,2020-02-01,2.0\nP3,2020-03-01,0.5\n"
# Events of every patient (the code is kept: min_patients 5); the broken row is line 8.
_EVENTS = "patient_id,time,code,value\n" + "".join(
    f"P{i},2020-0{i}-01,crp,{i}.5\n" for i in range(1, 7)
)
_TABLE = {"type": "table"}
_EVENTS_ENTRY = {"type": "events"}

CASES: list[BrokenInput] = [
    BrokenInput(
        "table: duplicated column name",
        "table",
        _file("wide.csv", "patient_id,crp,crp\nP1,1,2\n", _TABLE),
        names=("wide.csv", "'crp'", "2 times"),
    ),
    BrokenInput(
        "table: text in a numeric column",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P4,6.1%\n", _TABLE),
        names=("wide.csv", "line 5", "crp", "'6.1%'"),
        skip_reason="crp:not_a_number",
    ),
    BrokenInput(
        "table: infinite value",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P4,inf\n", _TABLE),
        names=("wide.csv", "line 5", "crp"),
        skip_reason="crp:non_finite",
    ),
    BrokenInput(
        # Not broken: a byte-order mark and CRLF line ends read as written (the id column
        # is found); the row of a patient outside the cohort is counted.
        "table: BOM header and CRLF line ends",
        "table",
        _file(
            "wide.csv",
            b"\xef\xbb\xbfpatient_id,crp\r\nP1,1.5\r\nP2,2.0\r\nP9,3.0\r\n",
            _TABLE,
        ),
        names=(),
        skip_reason="unknown_patient",
        audited=True,
    ),
    BrokenInput(
        "table: semicolons and a decimal comma",
        "table",
        _file("wide.csv", "patient_id;crp\nP1;1.5\nP2;2.0\nP3;0.5\nP4;1,5\n", _TABLE),
        names=("wide.csv", "line 5", "crp", "'1,5'", "not a number"),
        skip_reason="crp:not_a_number",
    ),
    BrokenInput(
        "table: an ambiguous date 01/03/2020",
        "table",
        _file("wide.csv", _DATED + "P4,01/03/2020,1.0\n", {**_TABLE, "date_column": "date"}),
        names=("wide.csv", "line 5", "date", "'01/03/2020'", "ambiguous"),
        skip_reason="date:not_a_date",
    ),
    BrokenInput(
        "table: a date that is not ISO 8601",
        "table",
        _file("wide.csv", _DATED + "P4,2020/03/01,1.0\n", {**_TABLE, "date_column": "date"}),
        names=("wide.csv", "line 5", "date", "'2020/03/01'", "YYYY-MM-DD"),
        skip_reason="date:not_a_date",
    ),
    BrokenInput(
        "table: an empty date",
        "table",
        _file("wide.csv", _DATED + "P4,,1.0\n", {**_TABLE, "date_column": "date"}),
        names=("wide.csv", "line 5", "date is empty"),
        skip_reason="date:missing",
    ),
    BrokenInput(
        "table: a second row of a patient without date_column",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P3,0.7\n", _TABLE),
        names=("wide.csv", "line 5", "patient 'P3'", "second row"),
        skip_reason="duplicate_patient",
    ),
    BrokenInput(
        "table: a row with the wrong number of fields",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P4,1.0,2.0\n", _TABLE),
        names=("wide.csv", "line 5", "3 fields"),
    ),
    BrokenInput(
        "table: an .xlsx file",
        "table",
        _file("wide.xlsx", b"PK\x03\x04 not really a workbook", _TABLE),
        names=("wide.xlsx", "unsupported", ".xlsx"),
    ),
    BrokenInput(
        "table: a column named in the config is absent",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD, {**_TABLE, "columns": ["crp", "hb"]}),
        names=("wide.csv", "'hb'", "columns"),
    ),
    BrokenInput(
        # Not an error: a row with every value empty is not a presence; counted.
        "table: a row without any value",
        "table",
        _file("wide.csv", "patient_id,crp,hb\nP1,1.5,12\nP2,,\n", _TABLE),
        names=(),
        skip_reason="no_values",
        audited=True,
    ),
    BrokenInput(
        "events: a text value",
        "events",
        _file("events.csv", _EVENTS + "P4,2020-04-02,crp,high\n", _EVENTS_ENTRY),
        names=("events.csv", "line 8", "value", "'high'", "not a number"),
        skip_reason="value:not_a_number",
    ),
    BrokenInput(
        "events: an infinite value",
        "events",
        _file("events.csv", _EVENTS + "P4,2020-04-02,crp,-inf\n", _EVENTS_ENTRY),
        names=("events.csv", "line 8", "value", "not finite"),
        skip_reason="value:non_finite",
    ),
    BrokenInput(
        "events: an impossible date",
        "events",
        _file("events.csv", _EVENTS + "P4,2020-02-30,crp,1.0\n", _EVENTS_ENTRY),
        names=("events.csv", "line 8", "time", "'2020-02-30'", "not a valid calendar date"),
        skip_reason="time:not_a_date",
    ),
    BrokenInput(
        "events: an ambiguous date",
        "events",
        _file("events.csv", _EVENTS + "P4,04/02/2020,crp,1.0\n", _EVENTS_ENTRY),
        names=("events.csv", "line 8", "'04/02/2020'", "ambiguous"),
        skip_reason="time:not_a_date",
    ),
    BrokenInput(
        "events: an empty date",
        "events",
        _file("events.csv", _EVENTS + "P4,,crp,1.0\n", _EVENTS_ENTRY),
        names=("events.csv", "line 8", "time is empty"),
        skip_reason="time:missing",
    ),
    BrokenInput(
        # Not an error: P6's only record is after the index date, so P6 is not present.
        "events: a patient with records only after the index date",
        "events",
        _file(
            "events.csv",
            _EVENTS.replace("P6,2020-06-01", "P6,2020-08-01"),
            {**_EVENTS_ENTRY, "form": "sequence"},
        ),
        names=(),
        skip_reason="no_records_in_window",
        audited=True,
    ),
]
