"""Flat tables: wide (one row per patient, optional dates) and long events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medweave.cohort import Audit
from medweave.errors import InputError
from medweave.sources import ReadContext, get

INDEX = pd.DataFrame(
    {"patient_id": ["a", "b", "c"], "index_date": pd.to_datetime(["2020-03-01"] * 3)}
)


def _read(kind: str, spec: dict, base: Path):
    reader, spec_cls = get(kind)
    ctx = ReadContext(index=INDEX, lookback_days=365, audit=Audit(), base_dir=base)
    return reader(spec_cls(name="t", type=kind, **spec), ctx), ctx.audit


def test_wide_table_with_categoricals(tmp_path: Path) -> None:
    pd.DataFrame(
        {"patient_id": ["a", "b", "x"], "bmi": ["22.5", "", "30"], "smoker": ["yes", "no", "no"]}
    ).to_csv(tmp_path / "w.csv", index=False)
    block, audit = _read("table", {"path": "w.csv", "categorical": ["smoker"]}, tmp_path)
    assert block.ids == ["a", "b"]
    assert block.feature_names == ["bmi", "smoker=no", "smoker=yes"]
    np.testing.assert_array_equal(block.x[0], [22.5, 0, 1])
    assert np.isnan(block.x[1, 0])  # not measured stays missing
    assert audit.sources["t"].excluded == {"unknown_patient": 1}
    assert audit.excluded_patients["x"].startswith("not in the index")


def test_wide_table_dated_rows_keep_latest_before_index(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "b"],
            "date": ["2019-01-01", "2020-02-01", "2020-06-01", "2020-01-01"],
            "score": [1, 2, 3, 4],
        }
    ).to_parquet(tmp_path / "w.parquet")
    block, audit = _read("table", {"path": "w.parquet", "date_column": "date"}, tmp_path)
    got = dict(zip(block.ids, block.x[:, 0], strict=True))
    assert got == {"a": 2.0, "b": 4.0}
    assert audit.sources["t"].excluded == {"after_index": 1, "older_row": 1}


def test_wide_table_errors(tmp_path: Path) -> None:
    pd.DataFrame({"patient_id": ["a", "b"], "stage": ["II", "III"]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    # Through the shared value checks: line, column, value, what was expected.
    with pytest.raises(InputError, match=r"s.csv line 2: stage 'II' is not a number; .*categ"):
        _read("table", {"path": "s.csv"}, tmp_path)
    pd.DataFrame({"patient_id": ["a", "a", "b"], "v": [1, 2, 3]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    with pytest.raises(InputError, match=r"d.csv line 3: patient 'a' has a second row"):
        _read("table", {"path": "d.csv"}, tmp_path)
    # on_error: skip leaves out every row of a patient with two (which one is right?).
    block, audit = _read("table", {"path": "d.csv", "on_error": "skip"}, tmp_path)
    assert block.ids == ["b"]
    assert audit.sources["t"].excluded == {"duplicate_patient": 2}


def test_wide_table_values_checked_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("patient_id,crp,hb\na,6.1%,12\nb,inf,13\nc,2.5,NaN\nx,high,1\n")
    with pytest.raises(InputError, match=r"w.csv line 2: crp '6.1%' is not a number"):
        _read("table", {"path": "w.csv"}, tmp_path)
    block, audit = _read("table", {"path": "w.csv", "on_error": "skip"}, tmp_path)
    assert block.ids == ["c"]  # x is not in the index: its text is never checked
    assert np.isnan(block.x[0, 1])  # the word NaN is an empty cell: not measured
    src = audit.sources["t"]
    assert src.excluded == {"crp:not_a_number": 1, "crp:non_finite": 1, "unknown_patient": 1}
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read == 4


def test_presence_needs_a_value(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("patient_id,bmi,smoker\na,22.5,\nb,,\nc,,no\n")
    block, audit = _read("table", {"path": "w.csv", "categorical": ["smoker"]}, tmp_path)
    assert block.ids == ["a", "c"]  # b's row holds nothing: b is not present
    src = audit.sources["t"]
    assert src.patients_missing == {"no_values": 1} and src.excluded == {"no_values": 1}


def test_patients_without_a_row_are_counted_as_such(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("patient_id,bmi\na,22.5\n")
    block, audit = _read("table", {"path": "w.csv"}, tmp_path)
    assert block.ids == ["a"] and audit.sources["t"].patients_missing == {"no_row": 2}


def test_bom_and_semicolons_read_as_written(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_bytes(b"\xef\xbb\xbfpatient_id;bmi\r\na;22.5\r\nb;30\r\n")
    block, _ = _read("table", {"path": "w.csv"}, tmp_path)
    assert block.ids == ["a", "b"] and block.feature_names == ["bmi"]
    np.testing.assert_array_equal(block.x[:, 0], [22.5, 30.0])
    # A decimal comma is not a number: said, not read as missing.
    (tmp_path / "c.csv").write_text("patient_id;bmi\na;22,5\n")
    with pytest.raises(InputError, match=r"c.csv line 2: bmi '22,5' is not a number"):
        _read("table", {"path": "c.csv"}, tmp_path)


def test_wide_table_dates_checked(tmp_path: Path) -> None:
    rows = "patient_id,date,v\na,01/03/2020,1\na,2019-12-01,2\nb,,3\nc,2020-02-30,4\n"
    (tmp_path / "w.csv").write_text(rows)
    spec = {"path": "w.csv", "date_column": "date"}
    with pytest.raises(InputError, match=r"w.csv line 2: date '01/03/2020' is ambiguous"):
        _read("table", spec, tmp_path)
    block, audit = _read("table", {**spec, "on_error": "skip"}, tmp_path)
    got = dict(zip(block.ids, block.x[:, 0], strict=True))
    assert got == {"a": 2.0}  # a's older, valid row is used
    assert audit.sources["t"].excluded == {"date:not_a_date": 2, "date:missing": 1}
    (tmp_path / "w.csv").write_text("patient_id,date,v\nb,,3\n")
    with pytest.raises(InputError, match=r"w.csv line 2: date is empty"):
        _read("table", spec, tmp_path)


def _write_events(path: Path) -> None:
    rows = [
        ("a", "2020-01-01", "crp", 5.0),
        ("a", "2020-02-01", "crp", 7.0),
        ("a", "2020-04-01", "crp", 99.0),  # after the index date
        ("b", "2020-01-15", "crp", 3.0),
        ("c", "2020-01-20", "asthma", None),
    ]
    pd.DataFrame(rows, columns=["patient_id", "time", "code", "value"]).to_csv(path, index=False)


def test_long_events_use_the_shared_feature_sql(tmp_path: Path) -> None:
    _write_events(tmp_path / "e.csv")
    block, audit = _read("events", {"path": "e.csv", "min_patients": 1}, tmp_path)
    feats = pd.DataFrame(block.x, index=block.ids, columns=block.feature_names)
    assert feats.loc["a", "measurement:local/crp:last"] == 7.0
    assert feats.loc["a", "measurement:local/crp:mean"] == 6.0
    assert feats.loc["c", "condition:local/asthma:count"] == 1
    assert "age_at_index" not in block.feature_names
    assert audit.sources["t"].excluded["after_index"] == 1


def test_long_events_as_sequences(tmp_path: Path) -> None:
    _write_events(tmp_path / "e.csv")
    block, audit = _read("events", {"path": "e.csv", "form": "sequence"}, tmp_path)
    assert block.kind == "sequence" and block.present.all()
    ev = block.events
    a = ev[ev["patient_id"] == "a"]
    assert a["code"].tolist() == ["measurement:local/crp"] * 2
    assert a["value"].tolist() == [5.0, 7.0]  # oldest first, the later record left out
    assert a["days_before_index"].tolist() == [60, 29]
    assert ev.loc[ev["patient_id"] == "c", "code"].item() == "condition:local/asthma"
    assert audit.sources["t"].excluded["after_index"] == 1
    with pytest.raises(ValueError, match="min_patients applies to form: features only"):
        _read("events", {"path": "e.csv", "form": "sequence", "min_patients": 2}, tmp_path)


def test_events_values_and_dates_checked(tmp_path: Path) -> None:
    rows = [
        ("a", "2020-01-01", "crp", "5"),
        ("a", "2020-01-02", "crp", "high"),  # text
        ("a", "2020-01-03", "crp", "inf"),
        ("b", "01/02/2020", "crp", "3"),  # not ISO
        ("b", "2020-01-15", "crp", "4"),
        ("c", "", "crp", "1"),  # no date
        ("c", "2020-05-01", "crp", "n/a"),  # after the index date: never used or checked
        ("x", "someday", "crp", "?"),  # not in the index: never checked
    ]
    pd.DataFrame(rows, columns=["patient_id", "time", "code", "value"]).to_csv(
        tmp_path / "e.csv", index=False
    )
    spec = {"path": "e.csv", "min_patients": 1}
    # Dates are checked first (a value is checked only in the window).
    with pytest.raises(InputError, match=r"e.csv line 5: time '01/02/2020' is ambiguous"):
        _read("events", spec, tmp_path)
    block, audit = _read("events", {**spec, "on_error": "skip"}, tmp_path)
    feats = pd.DataFrame(block.x, index=block.ids, columns=block.feature_names)
    assert feats.loc["a", "measurement:local/crp:count"] == 1
    assert feats.loc["b", "measurement:local/crp:mean"] == 4.0
    # c's only record is after the index date: not present.
    assert block.ids == ["a", "b"]
    src = audit.sources["t"]
    assert src.patients_missing == {"no_records_in_window": 1}
    assert src.excluded == {
        "value:not_a_number": 1,
        "value:non_finite": 1,
        "time:not_a_date": 1,
        "time:missing": 1,
        "after_index": 1,
        "unknown_patient": 1,
    }
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read == len(rows)
    seq, seq_audit = _read(
        "events", {"path": "e.csv", "form": "sequence", "on_error": "skip"}, tmp_path
    )
    assert seq.present.tolist() == [True, True, False]
    assert seq_audit.sources["t"].excluded == src.excluded
    pd.DataFrame(rows[:3], columns=["patient_id", "time", "code", "value"]).to_csv(
        tmp_path / "e.csv", index=False
    )
    with pytest.raises(InputError, match=r"e.csv line 3: value 'high' is not a number"):
        _read("events", spec, tmp_path)
