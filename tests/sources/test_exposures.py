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
