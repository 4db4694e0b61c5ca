"""Exposure reader: windows before the index date, thresholds, coverage, linking, audit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medweave.cohort import Audit
from medweave.errors import InputError
from medweave.sources import ReadContext, get


def _ctx(tmp_path: Path, index: pd.DataFrame) -> ReadContext:
    return ReadContext(index=index, lookback_days=365, audit=Audit(), base_dir=tmp_path)


def _read(spec: dict, ctx: ReadContext):
    reader, spec_cls = get("exposures")
    return reader(spec_cls(name="env", type="exposures", **spec), ctx)


@pytest.fixture
def small(tmp_path: Path) -> ReadContext:
    days = pd.date_range("2020-01-01", "2020-03-31")
    rows = []
    for loc, base in (("11111", 10.0), ("22222", 20.0)):
        for k, d in enumerate(days):
            rows.append({"zip": loc, "date": d, "pm25": base + k, "ozone": 30.0})
    pd.DataFrame(rows).to_parquet(tmp_path / "exp.parquet")
    pd.DataFrame(
        {"patient_id": ["a", "b", "c", "d"], "location": ["11111", "22222", "99999", "11111"]}
    ).to_csv(tmp_path / "loc.csv", index=False)
    index = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e"],
            "index_date": pd.to_datetime(
                ["2020-02-01", "2020-03-01", "2020-02-01", "2020-01-03", "2020-02-01"]
            ),
        }
    )
    return _ctx(tmp_path, index)


def test_window_means_exclude_the_index_day_and_later(small: ReadContext) -> None:
    block = _read(
        {
            "path": "exp.parquet",
            "locations": "loc.csv",
            "windows_days": [7],
            "thresholds": {"pm25": 35},
        },
        small,
    )
    assert block.ids == ["a", "b"]  # c: unknown location, d: window not covered, e: no location
    feats = pd.DataFrame(block.x, index=block.ids, columns=block.feature_names)
    # a: index 2020-02-01 is day 31 -> the 7 days before are days 24..30 -> pm25 34..40
    assert feats.loc["a", "pm25:mean_7d"] == pytest.approx(np.mean(np.arange(34, 41) + 10.0 - 10.0))
    assert feats.loc["a", "pm25:max_7d"] == pytest.approx(40.0)
    assert feats.loc["a", "pm25:days_above_35_7d"] == 5
    assert feats.loc["b", "pm25:mean_7d"] == pytest.approx(np.mean(np.arange(53, 60) + 20.0))
    src = small.audit.sources["env"]
    assert src.rows_read == 182
    assert src.rows_used == 14
    assert src.excluded["after_index"] > 0
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read
    assert src.patients_missing == {
        "no_home_location": 1,
        "location_not_in_exposures": 1,
        "no_exposure_in_windows": 1,
    }


def test_lags_shift_the_window(small: ReadContext) -> None:
    block = _read(
        {
            "path": "exp.parquet",
            "locations": "loc.csv",
            "windows_days": [7],
            "lag_days": [0, 7],
            "variables": ["pm25"],
        },
        small,
    )
    feats = pd.DataFrame(block.x, index=block.ids, columns=block.feature_names)
    assert feats.loc["a", "pm25:mean_7d"] - feats.loc["a", "pm25:mean_7d_lag7d"] == pytest.approx(7)


def test_bad_input(small: ReadContext, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no column 'location_zip'"):
        _read(
            {"path": "exp.parquet", "locations": "loc.csv", "location_column": "location_zip"},
            small,
        )
    with pytest.raises(InputError, match="exactly one of 'locations'"):
        _read({"path": "exp.parquet"}, small)
    frame = pd.read_parquet(tmp_path / "exp.parquet")
    pd.concat([frame, frame.iloc[:1]]).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(InputError, match=r"dup.parquet row 183: a second row for location '11111'"):
        _read({"path": "dup.parquet", "locations": "loc.csv"}, small)


def test_synthetic_exposures_match_truth(cohort_dir: Path) -> None:
    index = pd.read_parquet(cohort_dir / "index.parquet")[["patient_id", "index_date"]]
    ctx = _ctx(cohort_dir, index)
    block = _read(
        {
            "path": "environment/exposures.parquet",
            "omop": "omop.duckdb",
            "windows_days": [365],
            "variables": ["pm25"],
        },
        ctx,
    )
    truth = pd.read_parquet(cohort_dir / "truth" / "patients.parquet").set_index("patient_id")
    assert set(block.ids) == set(truth.index[truth["has_environment"]])
    got = pd.Series(block.x[:, block.feature_names.index("pm25:mean_365d")], index=block.ids)
    np.testing.assert_allclose(got, truth.loc[block.ids, "pm25_mean_365d"], rtol=1e-4)


def _csv_source(tmp_path: Path, *, edit: dict[tuple[int, str], str] | None = None) -> None:
    """exp.csv (two zip codes x 100 days, numbers written as text, a text column) and
    loc.csv; ``edit`` sets cells (row, column) of exp.csv."""
    days = pd.date_range("2020-01-01", periods=100).strftime("%Y-%m-%d")
    rows = [
        {"zip": z, "date": d, "pm25": f"{10 * (k + 1) + i % 3}", "station": "north", "t": "-5"}
        for k, z in enumerate(("02139", "01002"))
        for i, d in enumerate(days)
    ]
    frame = pd.DataFrame(rows, dtype=object)
    for (row, col), value in (edit or {}).items():
        frame.loc[row, col] = value
    frame.to_csv(tmp_path / "exp.csv", index=False)
    pd.DataFrame({"patient_id": ["a", "b"], "location": ["02139", "01002"]}).to_csv(
        tmp_path / "loc.csv", index=False
    )


def _csv_ctx(tmp_path: Path) -> ReadContext:
    index = pd.DataFrame(
        {"patient_id": ["a", "b"], "index_date": pd.to_datetime(["2020-04-01", "2020-04-01"])}
    )
    return _ctx(tmp_path, index)


def test_csv_numbers_are_variables_and_text_columns_are_not(tmp_path: Path) -> None:
    _csv_source(tmp_path)
    block = _read(
        {
            "path": "exp.csv",
            "locations": "loc.csv",
            "windows_days": [30],
            "thresholds": {"pm25": 20},
        },
        _csv_ctx(tmp_path),
    )
    assert block.meta["variables"] == ["pm25", "t"]  # not 'station' (text)
    feats = pd.DataFrame(block.x, index=block.ids, columns=block.feature_names)
    assert feats.loc["b", "pm25:days_above_20_30d"] == 20  # 21 on a third of the 30 days
    assert feats.loc["a", "t:mean_30d"] == pytest.approx(-5.0)  # no default range for 't'


def test_text_in_a_mostly_numeric_column_is_a_value_error(tmp_path: Path) -> None:
    _csv_source(tmp_path, edit={(3, "pm25"): "high", (7, "pm25"): "-1"})
    with pytest.raises(InputError, match=r"exp.csv line 5: pm25 'high' is not a number"):
        _read({"path": "exp.csv", "locations": "loc.csv"}, _csv_ctx(tmp_path))
    ctx = _csv_ctx(tmp_path)
    _read({"path": "exp.csv", "locations": "loc.csv", "on_error": "skip"}, ctx)
    src = ctx.audit.sources["env"]
    assert src.excluded["pm25:not_a_number"] == 1
    assert src.excluded["pm25:out_of_range"] == 1
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read == 200


def test_default_ranges_go_by_the_normalised_name_and_ranges_replace_them(tmp_path: Path) -> None:
    _csv_source(tmp_path, edit={(3, "pm25"): "-1"})
    frame = pd.read_csv(tmp_path / "exp.csv", dtype=str).rename(columns={"pm25": "PM2.5"})
    frame.to_csv(tmp_path / "exp.csv", index=False)
    with pytest.raises(InputError, match=r"line 5: PM2.5 '-1' is out of range; expected .*>= 0"):
        _read({"path": "exp.csv", "locations": "loc.csv"}, _csv_ctx(tmp_path))
    spec = {"path": "exp.csv", "locations": "loc.csv", "ranges": {"PM2.5": [-2, None]}}
    assert _read(spec, _csv_ctx(tmp_path)).ids == ["a", "b"]
    with pytest.raises(InputError, match=r"line 2: t '-5' is out of range; expected a number "):
        _read({**spec, "ranges": {"t": [0, 50]}}, _csv_ctx(tmp_path))
    with pytest.raises(InputError, match=r"ranges for 'pm10', which is not among the variables"):
        _read({**spec, "ranges": {"pm10": [0, 1]}}, _csv_ctx(tmp_path))
    with pytest.raises(InputError, match=r"ranges for 't' is \[5, 1\]"):
        _read({**spec, "ranges": {"t": [5, 1]}}, _csv_ctx(tmp_path))


def test_a_doubled_day_is_left_out_whole_under_skip(small: ReadContext, tmp_path: Path) -> None:
    frame = pd.read_parquet(tmp_path / "exp.parquet")
    pd.concat([frame, frame.iloc[:1]]).to_parquet(tmp_path / "dup.parquet")
    _read({"path": "dup.parquet", "locations": "loc.csv", "on_error": "skip"}, small)
    assert small.audit.sources["env"].excluded["duplicate_location_date"] == 2


def test_integer_zip_codes_name_the_cause_or_are_padded(tmp_path: Path) -> None:
    _csv_source(tmp_path)
    frame = pd.read_csv(tmp_path / "exp.csv", dtype={"zip": int, "pm25": float, "t": float})
    frame.to_parquet(tmp_path / "exp.parquet")  # zip 2139: its leading zero is gone
    with pytest.raises(InputError) as err:
        _read({"path": "exp.parquet", "locations": "loc.csv"}, _csv_ctx(tmp_path))
    message = str(err.value)
    assert "no cohort patient's location is in the exposure table" in message
    assert "'01002', '02139'" in message and "'1002', '2139'" in message
    assert "leading zeros: set location_digits: 5" in message
    assert "'a'" not in message  # no patient id next to the codes
    ctx = _csv_ctx(tmp_path)
    block = _read({"path": "exp.parquet", "locations": "loc.csv", "location_digits": 5}, ctx)
    assert block.ids == ["a", "b"]
    assert block.meta["locations_normalised"] == {"exposure_rows": 200, "locations": 0}


def test_no_patient_with_a_location(tmp_path: Path) -> None:
    _csv_source(tmp_path)
    pd.DataFrame({"patient_id": ["a", "b"], "location": [None, None]}).to_csv(
        tmp_path / "loc.csv", index=False
    )
    with pytest.raises(InputError, match=r"no patient of .*loc.csv has a location"):
        _read({"path": "exp.csv", "locations": "loc.csv"}, _csv_ctx(tmp_path))


def test_a_zip_code_missing_its_leading_zero_is_counted_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _csv_source(tmp_path)
    pd.DataFrame({"patient_id": ["a", "b"], "location": ["2139", "01002"]}).to_csv(
        tmp_path / "loc.csv", index=False
    )
    ctx = _csv_ctx(tmp_path)
    with caplog.at_level("WARNING", logger="medweave.sources"):
        block = _read({"path": "exp.csv", "locations": "loc.csv"}, ctx)
    assert block.ids == ["b"]
    assert ctx.audit.sources["env"].patients_missing == {"location_not_in_exposures": 1}
    assert "would be with location_digits set" in caplog.text
