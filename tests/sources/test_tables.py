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
    with pytest.raises(InputError, match=r"s.csv line 2: column 'stage' holds 'II', not a number"):
        _read("table", {"path": "s.csv"}, tmp_path)
    pd.DataFrame({"patient_id": ["a", "a"], "v": [1, 2]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match=r"d.csv line 3: patient 'a' has a second row"):
        _read("table", {"path": "d.csv"}, tmp_path)


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
