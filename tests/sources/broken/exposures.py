"""Broken inputs of the ``exposures`` reader: bad values, dates and days in the exposure
table, and locations that do not link patients to it.

Each entry starts from a small valid source (:func:`_write`): ``exp.csv`` with two zip
codes x 400 days before the index date (so the 365-day window is covered) and
``loc.csv`` giving each of the six patients one of them, then breaks one thing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from medweave.testing.readers import INDEX_DATE, INDEX_IDS, BrokenInput

_ZIPS = ("02139", "01002")
_DAYS = 400
#: The line of the exposure CSV's row 10 (after the header line).
_LINE = 12

Edit = Callable[[pd.DataFrame], pd.DataFrame]


def _exposures() -> pd.DataFrame:
    days = pd.date_range(end=pd.Timestamp(INDEX_DATE) - pd.Timedelta(days=1), periods=_DAYS)
    rows = [
        {"zip": z, "date": d.strftime("%Y-%m-%d"), "pm25": f"{5 + k + (i % 7):.1f}", "no2": "12"}
        for k, z in enumerate(_ZIPS)
        for i, d in enumerate(days)
    ]
    return pd.DataFrame(rows, dtype=object)


def _locations() -> pd.DataFrame:
    return pd.DataFrame(
        {"patient_id": list(INDEX_IDS), "location": [_ZIPS[i % 2] for i in range(len(INDEX_IDS))]},
        dtype=object,
    )


def _keep(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _write(
    exposures: Edit = _keep, locations: Edit = _keep, *, parquet: bool = False, **entry: Any
) -> Callable[[Path], dict[str, Any]]:
    def write(folder: Path) -> dict[str, Any]:
        exp = exposures(_exposures())
        name = "exp.parquet" if parquet else "exp.csv"
        if parquet:
            exp.to_parquet(folder / name, index=False)
        else:
            exp.to_csv(folder / name, index=False)
        locations(_locations()).to_csv(folder / "loc.csv", index=False)
        return {"type": "exposures", "path": name, "locations": "loc.csv", **entry}

    return write


def _set(row: int, column: str, value: Any) -> Edit:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return edit


def _double_row(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[10]]], ignore_index=True)


def _zips_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        zip=frame["zip"].astype(int),
        date=pd.to_datetime(frame["date"]),
        pm25=frame["pm25"].astype(float),
        no2=frame["no2"].astype(float),
    )


def _zip_plus_four(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(location=frame["location"] + "-0001")


def _second_location(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(
        [frame, pd.DataFrame({"patient_id": ["P2"], "location": [_ZIPS[0]]})], ignore_index=True
    )


def _unknown_patient(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(
        [frame, pd.DataFrame({"patient_id": ["Q99"], "location": [_ZIPS[0]]})], ignore_index=True
    )


def _other_ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(patient_id="X" + frame["patient_id"])


def _text_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["zip", "date"]].assign(station="north")


_SKIP = "or set on_error: skip"

CASES: list[BrokenInput] = [
    BrokenInput(
        "exposures: negative pm25",
        "exposures",
        _write(_set(10, "pm25", "-3")),
        names=("exp.csv", f"line {_LINE}", "pm25 '-3' is out of range", ">= 0", _SKIP),
        skip_reason="pm25:out_of_range",
    ),
    BrokenInput(
        "exposures: text in a variable column",
        "exposures",
        _write(_set(10, "pm25", "high")),
        names=("exp.csv", f"line {_LINE}", "pm25 'high' is not a number"),
        skip_reason="pm25:not_a_number",
    ),
    BrokenInput(
        "exposures: infinite value",
        "exposures",
        _write(_set(10, "no2", "inf")),
        names=("exp.csv", f"line {_LINE}", "no2", "not finite"),
        skip_reason="no2:non_finite",
    ),
    BrokenInput(
        "exposures: temperature in kelvin",
        "exposures",
        _write(lambda f: _set(10, "temperature", "293.1")(f.assign(temperature="21.5"))),
        names=("exp.csv", f"line {_LINE}", "temperature '293.1'", "between -90 and 60", "ranges"),
        skip_reason="temperature:out_of_range",
    ),
    BrokenInput(
        "exposures: bad date",
        "exposures",
        _write(_set(10, "date", "yesterday")),
        names=("exp.csv", f"line {_LINE}", "date 'yesterday' is not a date"),
        skip_reason="date:not_a_date",
    ),
    BrokenInput(
        "exposures: empty date",
        "exposures",
        _write(_set(10, "date", None)),
        names=("exp.csv", f"line {_LINE}", "date is empty"),
        skip_reason="date:missing",
    ),
    BrokenInput(
        "exposures: ambiguous day/month date",
        "exposures",
        _write(_set(10, "date", "01/03/2020")),
        names=("exp.csv", f"line {_LINE}", "'01/03/2020'", "ambiguous"),
        skip_reason="date:not_a_date",
    ),
    BrokenInput(
        "exposures: empty location",
        "exposures",
        _write(_set(10, "zip", None)),
        names=("exp.csv", f"line {_LINE}", "zip is empty"),
        skip_reason="zip:missing",
    ),
    BrokenInput(
        "exposures: a second row for a location and day",
        "exposures",
        _write(_double_row),
        names=("exp.csv", f"line {2 + 2 * _DAYS}", "a second row for location '02139'"),
        skip_reason="duplicate_location_date",
    ),
    BrokenInput(
        "exposures: zip codes without their leading zero",
        "exposures",
        _write(_zips_as_integers, parquet=True),
        names=("exp.parquet", "loc.csv", "'2139'", "'02139'", "location_digits: 5"),
    ),
    BrokenInput(
        "exposures: ZIP+4 codes for the patients",
        "exposures",
        _write(locations=_zip_plus_four),
        names=("loc.csv", "exp.csv", "'02139-0001'", "location_digits: 5"),
    ),
    BrokenInput(
        "exposures: no patient id of the locations table is in the cohort",
        "exposures",
        _write(locations=_other_ids),
        names=("loc.csv", "'XP1'", "'P1'", "locations_id_column"),
    ),
    BrokenInput(
        "exposures: no column holds numbers",
        "exposures",
        _write(_text_only),
        names=("exp.csv", "holds numbers", "variables"),
    ),
    BrokenInput(
        "exposures: a patient with two home locations",
        "exposures",
        _write(locations=_second_location),
        names=("loc.csv", "line 8", "'P2'", "second, different location"),
        skip_reason="several_home_locations",
    ),
    BrokenInput(
        "exposures: a patient without a location",
        "exposures",
        _write(locations=_set(4, "location", None)),
        names=(),
        skip_reason="no_home_location",
        audited=True,
    ),
    BrokenInput(
        "exposures: a locations table row for a patient outside the cohort",
        "exposures",
        _write(locations=_unknown_patient),
        names=(),
        skip_reason="locations:unknown_patient",
        audited=True,
    ),
]
