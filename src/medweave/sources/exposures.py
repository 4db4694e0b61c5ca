"""Environmental exposures: a (location, date, variables) table joined to each patient's home
location over windows before the index date.

Per variable, window and lag: the mean, the maximum and (with a threshold) the number of
days above it, over the ``w`` days that end ``lag`` days before the index date (the index
day itself is not included). A window with data on fewer than ``min_coverage`` of its days
gives NaN rather than a mean of a few days.

**Variables.** Without ``variables``, every column other than the location and date
columns that holds numbers is one: a typed column (Parquet) of a numeric type, or a text
column (every CSV column is read as text) of which more than half the non-empty values are
numbers. A text value in such a column is then a value error, not a reason to drop the
column; a column of mostly text (a place name) is not a variable.

**Value checks** (:data:`CHECKS`, one rule per variable, applied by the shared mechanism of
:mod:`medweave.sources._checks`): a value must be a number and finite (an empty cell is
"not measured" and allowed). Ranges by default, by the variable's name in lower case with
everything but letters and digits removed (``PM2.5`` and ``pm2_5`` are ``pm25``):
pollutants and precipitation (pm1, pm25, pm10, no, no2, nox, o3, ozone, so2, co, nh3, bc,
precipitation, precip, rainfall) are >= 0; temperature (temperature, temp, tavg, tmean,
tmax, tmin) is in degrees Celsius between -90 and 60; relative humidity (humidity, rh,
relativehumidity) is between 0 and 100; any other variable only needs to be finite. The
key ``ranges: {variable: [min, max]}`` (``null`` for an open end) replaces the default of
a variable. The date must be an ISO date (``date_problems``: ``01/03/2020`` is refused as
ambiguous) and the location must not be empty; one row per location and day. With
``on_error: skip`` a row breaking any of these is left out and counted in the audit
(``{column}:{problem}``, ``duplicate_location_date`` for every row of a doubled day);
otherwise the first is an error naming the file, the row, the column and the value.

**Locations** are compared as text, exactly (a number-typed column is read without a
decimal part: ``2139``, not ``2139.0``). ``location_digits: N`` compares them as N-digit
codes instead: on both sides a code of at most N digits is zero-padded (``2139`` ->
``02139``, as a zip code typed as an integer loses its leading zero) and a ZIP+4 code
(``02139-1234``) is cut to its first part; the values changed are logged and counted in
the block's meta (``locations_normalised``). When no cohort patient's location is in the
exposure table, or no cohort patient has a location at all, the reader says so, with
examples of the codes on each side (never paired with a patient).

**Presence.** A patient is present when they have a home location, that location is in
the exposure table, and at least one window holds enough data. The others are missing,
counted by reason: ``no_home_location``, ``several_home_locations`` (skipped),
``location_not_in_exposures``, ``no_exposure_in_windows``. Rows of the locations table
for patients outside the cohort are counted as ``locations:unknown_patient`` (rows of
that table, not of the exposure table).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._checks import Rule, ValueChecks, Violation, parse_numbers
from medweave.sources._io import data_row, read_frame, require_columns

__all__ = ["CHECKS", "ExposureSpec", "read_exposures"]

log = logging.getLogger("medweave.sources")

_NON_NEGATIVE = (
    *("pm1", "pm25", "pm10", "no", "no2", "nox", "o3", "ozone", "so2", "co", "nh3", "bc"),
    *("precipitation", "precip", "rainfall"),
)
_TEMPERATURE = ("temperature", "temp", "tavg", "tmean", "tmax", "tmin")
_HUMIDITY = ("humidity", "rh", "relativehumidity")

#: The default rule of each variable, by its normalised name (:func:`_normal`); ``"*"``
#: for any other. The reader applies a copy named after the actual column.
CHECKS = ValueChecks(
    "exposures",
    [
        *(Rule(n, "a concentration or amount >= 0", min=0.0) for n in _NON_NEGATIVE),
        *(
            Rule(n, "degrees Celsius between -90 and 60 (other units: set ranges)", -90.0, 60.0)
            for n in _TEMPERATURE
        ),
        *(Rule(n, "a relative humidity between 0 and 100", 0.0, 100.0) for n in _HUMIDITY),
        Rule("*", "a finite number"),
    ],
)
#: The key columns: checked row by row here, reported through the same mechanism.
KEY_CHECKS = ValueChecks(
    "exposures",
    [
        Rule("date", "an ISO date, YYYY-MM-DD", required=True, date=True),
        Rule("location", "a location code (such as a zip code)", required=True),
    ],
)


class ExposureSpec(SourceSpec):
    """``type: exposures``. Link patients to locations with ``locations`` (a table of
    patient_id, location) or ``omop`` (a DuckDB OMOP file: person.location_id -> location.zip).
    ``ranges`` replaces the default range of a variable; ``location_digits`` compares
    locations as zero-padded codes of that many digits (5 for US zip codes)."""

    path: str
    location_column: str = "zip"
    date_column: str = "date"
    variables: list[str] | None = None
    locations: str | None = None
    locations_id_column: str = "patient_id"
    locations_location_column: str = "location"
    omop: str | None = None
    omop_id: str = "person_source_value"
    windows_days: list[int] = Field(default_factory=lambda: [30, 365])
    lag_days: list[int] = Field(default_factory=lambda: [0])
    thresholds: dict[str, float] = Field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    location_digits: int | None = Field(default=None, ge=1, le=20)
    min_coverage: float = Field(default=0.8, gt=0, le=1)


@dataclass(frozen=True)
class _Links:
    """Patient -> location rows (``patient_id``, ``location``, ``pos``: the row in the
    file), and how to name them in messages."""

    frame: pd.DataFrame
    path: Path
    where: str  # "…/loc.csv column 'location'" or "…/omop.duckdb location.zip"
    locate: Callable[[int], str]
    table: bool  # a locations table (its unknown ids are counted), not an OMOP database


@register(
    "exposures",
    spec=ExposureSpec,
    description="environmental exposures keyed by place and date (CSV/Parquet)",
)
def read_exposures(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, ExposureSpec)
    path = ctx.resolve(spec.path)
    table = read_frame(path, what="exposure table").reset_index(drop=True)
    require_columns(
        table, [spec.location_column, spec.date_column], path=path, key="location/date_column"
    )
    variables = _variables(spec, table, path=path)
    ctx.audit.read(spec.name, len(table))
    locations = _as_text(table[spec.location_column])
    normalised: dict[str, int] = {}
    if spec.location_digits is not None:
        locations, normalised["exposure_rows"] = _pad(locations, spec.location_digits)
    exp = _checked_rows(spec, table, variables, locations, path=path, audit=ctx.audit)
    exp_where = f"{path} column {spec.location_column!r}"
    links = _patient_locations(spec, ctx)
    if spec.location_digits is not None:
        padded, normalised["locations"] = _pad(links.frame["location"], spec.location_digits)
        links = dataclasses.replace(links, frame=links.frame.assign(location=padded))
    pts_ok = _link(spec, ctx, links, set(locations.dropna()), exp_where=exp_where)
    if normalised:
        log.info(
            "source %r: locations changed to %d-digit codes: %s",
            spec.name,
            spec.location_digits,
            normalised,
        )

    con = duckdb.connect()
    try:
        con.register("exp", exp)
        con.register("pts", pts_ok)
        features, names = _window_features(con, spec, variables, n=len(pts_ok), ids=pts_ok)
        present = ~np.isnan(features).all(axis=1) if names else np.zeros(len(pts_ok), bool)
        # Rows count as used when they fall in the window of a patient who keeps the modality.
        con.unregister("pts")
        con.register("pts", pts_ok[present])
        row = con.execute(_usage_sql(max(spec.windows_days) + max(spec.lag_days))).fetchone()
        used, after = row if row is not None else (0, 0)
    finally:
        con.close()
    ctx.audit.used(spec.name, int(used))
    ctx.audit.exclude_rows(spec.name, "after_index", int(after))
    ctx.audit.exclude_rows(spec.name, "outside_windows", len(exp) - int(used) - int(after))
    ctx.audit.missing(spec.name, "no_exposure_in_windows", int((~present).sum()))
    keep = np.flatnonzero(present)
    meta = {"variables": variables, "windows_days": spec.windows_days, "lag_days": spec.lag_days}
    if normalised:
        meta["locations_normalised"] = normalised
    return ModalityBlock(
        name=spec.name,
        kind="exposure",
        ids=pts_ok["patient_id"].iloc[keep].tolist(),
        x=features[keep],
        feature_names=names,
        meta=meta,
    )


def _normal(name: str) -> str:
    """A variable's name for the default rules: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _holds_numbers(values: pd.Series) -> bool:
    """A numeric column, or text of which more than half the non-empty values are numbers."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        return True
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return False
    _, empty, text = parse_numbers(values)
    filled = int((~empty).sum())
    return filled > 0 and 2 * int((~empty & ~text).sum()) > filled


def _variables(spec: ExposureSpec, table: pd.DataFrame, *, path: Path) -> list[str]:
    """The variable columns (listed, or those holding numbers), with the keys naming them
    (thresholds, ranges) checked against them."""
    keys = (spec.location_column, spec.date_column)
    if spec.variables:
        require_columns(table, spec.variables, path=path, key="variables")
        variables = list(spec.variables)
    else:
        variables = [c for c in table.columns if c not in keys and _holds_numbers(table[c])]
        if not variables:
            raise InputError(
                f"{path}: no column besides {spec.location_column!r} and {spec.date_column!r} "
                f"holds numbers; list the exposure columns under 'variables' in source "
                f"{spec.name!r}"
            )
    for key, named in (("thresholds", spec.thresholds), ("ranges", spec.ranges)):
        for name in named:
            if name not in variables:
                raise InputError(
                    f"source {spec.name!r}: {key} for {name!r}, which is not among the "
                    f"variables {variables}"
                )
    for name, (low, high) in spec.ranges.items():
        if low is not None and high is not None and low > high:
            raise InputError(
                f"source {spec.name!r}: ranges for {name!r} is [{low:g}, {high:g}]; give "
                "[min, max] with min <= max (null for an open end)"
            )
    return variables


def _variable_checks(spec: ExposureSpec, variables: list[str]) -> ValueChecks:
    """The rule of each variable column, named after it: ``ranges``, else the default of
    :data:`CHECKS`. Not registered again (the module's CHECKS is what this reader declares)."""
    rules: dict[str, Rule] = {}
    for v in variables:
        if v in spec.ranges:
            low, high = spec.ranges[v]
            rule = Rule(v, "", min=low, max=high)
            expect = f"a number {rule.range_text()} (ranges in source {spec.name!r})"
            rules[v] = dataclasses.replace(rule, expect=expect)
        else:
            rules[v] = dataclasses.replace(CHECKS.rule(_normal(v)), field=v)
    return ValueChecks(CHECKS.reader, rules.values(), declare=False)


def _checked_rows(
    spec: ExposureSpec,
    table: pd.DataFrame,
    variables: list[str],
    locations: pd.Series,
    *,
    path: Path,
    audit: Audit,
) -> pd.DataFrame:
    """The rows whose location, date and values pass the checks, as (location, date,
    variables...); the others raise or are counted (``on_error``)."""

    def locate(i: int) -> str:
        return f"{path} {data_row(path, i)}"

    loc_col, date_col = spec.location_column, spec.date_column
    no_location = locations.isna().to_numpy()
    if no_location.any():
        i = int(np.flatnonzero(no_location)[0])
        KEY_CHECKS.report(
            [Violation(KEY_CHECKS.rules["location"], "missing", locate(i), "", loc_col)],
            source=spec.name,
            on_error=spec.on_error,
            audit=audit,
            counts={f"{loc_col}:missing": int(no_location.sum())},
        )
    parsed, dated = KEY_CHECKS.apply(
        {date_col: table[date_col]},
        source=spec.name,
        on_error=spec.on_error,
        audit=audit,
        locate=locate,
        rules={date_col: "date"},
        active=~no_location,
    )
    dates = pd.Series(parsed[date_col], index=table.index)
    keep = ~no_location & dated
    keys = pd.DataFrame({"location": locations, "date": dates})[keep]
    doubled = keys.duplicated(keep=False)
    if doubled.any():
        pos = int(keys.index[keys.duplicated(keep="first")][0])
        if spec.on_error == "raise":
            raise InputError(
                f"{locate(pos)}: a second row for location {locations.iloc[pos]!r} on "
                f"{dates.iloc[pos].date()}; keep one row per location and day, or set "
                f"on_error: skip in source {spec.name!r} to leave out every row of such days"
            )
        audit.exclude_rows(spec.name, "duplicate_location_date", int(doubled.sum()))
        keep[keys.index[doubled].to_numpy()] = False
    numbers, ok = _variable_checks(spec, variables).apply(
        {v: table[v] for v in variables},
        source=spec.name,
        on_error=spec.on_error,
        audit=audit,
        locate=locate,
        active=keep,
    )
    keep &= ok
    exp = pd.DataFrame({"location": locations[keep], "date": dates[keep]})
    for v in variables:
        exp[v] = numbers[v][keep]
    return exp.reset_index(drop=True)


def _as_text(values: pd.Series) -> pd.Series:
    """Codes as text (object, NaN where empty): stripped; a number without its decimal part
    when it has none (a Parquet float column of zip codes holds 2139.0)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        nums = values.to_numpy(dtype=np.float64, na_value=np.nan)
        text = [
            (str(int(x)) if x == np.round(x) else repr(float(x))) if np.isfinite(x) else None
            for x in nums
        ]
        return pd.Series(text, index=values.index, dtype=object).where(lambda s: s.notna(), np.nan)
    out = values.astype("string").str.strip()
    out = out.where(out != "")
    return out.astype(object).where(out.notna(), np.nan)


def _pad(codes: pd.Series, digits: int) -> tuple[pd.Series, int]:
    """Codes of at most ``digits`` digits zero-padded, ZIP+4 codes cut to their first part;
    with the number of values changed."""
    text = codes.astype("string")
    head = text.str.extract(rf"^(\d{{1,{digits}}})(?:-\d{{4}})?$")[0].str.zfill(digits)
    out = head.fillna(text)
    changed = int((out != text).fillna(value=False).sum())
    return out.astype(object).where(out.notna(), np.nan), changed


def _patient_locations(spec: ExposureSpec, ctx: ReadContext) -> _Links:
    """patient_id -> location (text), for patients with a known location."""
    if (spec.locations is None) == (spec.omop is None):
        raise InputError(
            f"source {spec.name!r}: give exactly one of 'locations' (a patient -> location "
            "table) or 'omop' (an OMOP DuckDB file with person and location)"
        )
    if spec.omop is not None:
        path = ctx.resolve(spec.omop)
        if not path.exists():
            raise InputError(f"{path}: OMOP database not found (source {spec.name!r}, key omop)")
        con = duckdb.connect(str(path), read_only=True)
        try:
            # DuckDB matches identifiers case-insensitively, as OMOP exports differ.
            frame = con.execute(
                f"SELECT CAST(p.{spec.omop_id} AS VARCHAR) AS patient_id, "
                "l.zip AS location FROM person p "
                "JOIN location l ON p.location_id = l.location_id"
            ).df()
        except duckdb.Error as exc:
            raise InputError(f"{path}: cannot link persons to locations ({exc})") from None
        finally:
            con.close()
        links = pd.DataFrame(
            {
                "patient_id": _as_text(frame["patient_id"]),
                "location": _as_text(frame["location"]),
                "pos": np.arange(len(frame)),
            }
        ).dropna()
        return _Links(
            links,
            path,
            f"{path} location.zip",
            lambda i: f"{path} table person",
            table=False,
        )
    path = ctx.resolve(spec.locations or "")
    frame = read_frame(path, what="locations table").reset_index(drop=True)
    cols = [spec.locations_id_column, spec.locations_location_column]
    require_columns(frame, cols, path=path, key="locations_*_column")
    links = pd.DataFrame(
        {
            "patient_id": _as_text(frame[cols[0]]),
            "location": _as_text(frame[cols[1]]),
            "pos": np.arange(len(frame)),
        }
    )
    return _Links(
        links,
        path,
        f"{path} column {cols[1]!r}",
        lambda i: f"{path} {data_row(path, i)}",
        table=True,
    )


def _link(
    spec: ExposureSpec, ctx: ReadContext, links: _Links, known: set[str], *, exp_where: str
) -> pd.DataFrame:
    """The cohort patients whose home location is in the exposure table (patient_id,
    index_date, location); the others counted as missing, by reason."""
    cohort = ctx.index[["patient_id", "index_date"]].astype({"patient_id": str})
    ids = set(cohort["patient_id"])
    frame = links.frame
    if links.table:
        no_id = frame["patient_id"].isna()
        ctx.audit.exclude_rows(spec.name, "locations:missing_patient_id", int(no_id.sum()))
        frame = frame[~no_id]
        unknown = ~frame["patient_id"].isin(ids)
        ctx.audit.exclude_rows(spec.name, "locations:unknown_patient", int(unknown.sum()))
        ctx.audit.unknown_patients(spec.name, sorted(set(frame["patient_id"][unknown])))
        frame = frame[~unknown]
    frame = frame.dropna().drop_duplicates(["patient_id", "location"])
    several = frame["patient_id"].duplicated(keep=False)
    n_several = 0
    if several.any():
        second = frame[frame["patient_id"].duplicated(keep="first")].iloc[0]
        if spec.on_error == "raise":
            raise InputError(
                f"{links.locate(int(second['pos']))}: patient {second['patient_id']!r} has a "
                f"second, different location; give each patient one home location, or set "
                f"on_error: skip in source {spec.name!r} to leave such patients out"
            )
        n_several = len(set(frame["patient_id"][several]) & ids)
        ctx.audit.missing(spec.name, "several_home_locations", n_several)
        frame = frame[~several]
    pts = cohort.merge(frame[["patient_id", "location"]], on="patient_id", how="inner")
    if pts.empty:
        raise InputError(_no_home_message(spec, links, cohort_example=min(ids)))
    pts_ok = pts[pts["location"].isin(known)].reset_index(drop=True)
    outside = sorted(set(pts["location"]) - known)
    if pts_ok.empty:
        raise InputError(
            f"source {spec.name!r}: no cohort patient's location is in the exposure table: "
            f"{len(pts)} patients have a location in {links.where} (such as "
            f"{_examples(outside)}), the {len(known)} locations of {exp_where} are such as "
            f"{_examples(known)}; {_hint(spec, outside, known)}"
        )
    if (
        outside
        and spec.location_digits is None
        and "location_digits" in _hint(spec, outside, known)
    ):
        log.warning(
            "source %r: %d patients' locations are not in the exposure table but would be "
            "with location_digits set (leading zeros or ZIP+4 codes)",
            spec.name,
            int((~pts["location"].isin(known)).sum()),
        )
    ctx.audit.missing(spec.name, "no_home_location", len(cohort) - len(pts) - n_several)
    ctx.audit.missing(spec.name, "location_not_in_exposures", len(pts) - len(pts_ok))
    return pts_ok


def _examples(values: set[str] | list[str], k: int = 3) -> str:
    """A few codes, sorted (not in patient order), quoted."""
    return ", ".join(repr(v) for v in sorted(values)[:k])


def _hint(spec: ExposureSpec, patients: list[str], table: set[str]) -> str:
    """What would make the two sides' codes meet: location_digits, when zero-padding or
    cutting ZIP+4 codes to N digits would match some; else which keys to check."""
    if spec.location_digits is None:
        widths = [len(m[1]) for v in [*patients, *table] if (m := re.match(r"^(\d+)", v))]
        for n in sorted(set(widths), reverse=True)[:1]:
            left, _ = _pad(pd.Series(patients, dtype=object), n)
            right, _ = _pad(pd.Series(sorted(table), dtype=object), n)
            if set(left) & set(right):
                plus4 = any(re.match(r"^\d+-\d{4}$", v) for v in [*patients, *table])
                return (
                    f"the codes differ in {'ZIP+4 suffixes' if plus4 else 'leading zeros'}: set "
                    f"location_digits: {n} in source {spec.name!r} to compare them as "
                    f"{n}-digit codes"
                )
    other = "the OMOP location.zip" if spec.omop is not None else "locations_location_column"
    return f"check that location_column and {other} hold the same kind of code"


def _no_home_message(spec: ExposureSpec, links: _Links, *, cohort_example: str) -> str:
    """Why no cohort patient has a home location: none has one, or the ids differ."""
    frame = links.frame.dropna()
    if frame.empty:
        what = "patient" if links.table else "person"
        return f"source {spec.name!r}: no {what} of {links.path} has a location; check " + (
            "locations_location_column" if links.table else "person.location_id"
        )
    key = "locations_id_column" if links.table else "omop_id"
    return (
        f"source {spec.name!r}: none of the {frame['patient_id'].nunique()} patients with a "
        f"location in {links.path} is a cohort patient (their ids look like "
        f"{frame['patient_id'].iloc[0]!r}, the cohort's like {cohort_example!r}); check {key}"
    )


def _window_features(
    con: duckdb.DuckDBPyConnection,
    spec: ExposureSpec,
    variables: list[str],
    *,
    n: int,
    ids: pd.DataFrame,
) -> tuple[np.ndarray, list[str]]:
    columns: list[np.ndarray] = []
    names: list[str] = []
    for lag in spec.lag_days:
        for w in spec.windows_days:
            suffix = f"{w}d" + (f"_lag{lag}d" if lag else "")
            aggs = []
            for v in variables:
                aggs += [f'avg("{v}")', f'max("{v}")', f'count("{v}")']
                if v in spec.thresholds:
                    aggs.append(f'count(*) FILTER (WHERE "{v}" > {float(spec.thresholds[v])})')
            sql = (
                f"SELECT p.patient_id, {', '.join(aggs)} FROM pts p LEFT JOIN exp e "
                "ON e.location = p.location "
                f"AND e.date >= p.index_date - INTERVAL {w + lag} DAY "
                f"AND e.date < p.index_date - INTERVAL {lag} DAY GROUP BY p.patient_id"
            )
            got = con.execute(sql).df().set_index("patient_id").reindex(ids["patient_id"])
            k = 0
            for v in variables:
                mean, mx, count = (got.iloc[:, k + j].to_numpy(dtype=float) for j in range(3))
                k += 3
                thin = count < spec.min_coverage * w
                columns += [np.where(thin, np.nan, mean), np.where(thin, np.nan, mx)]
                names += [f"{v}:mean_{suffix}", f"{v}:max_{suffix}"]
                if v in spec.thresholds:
                    above = got.iloc[:, k].to_numpy(dtype=float)
                    k += 1
                    columns.append(np.where(thin, np.nan, above))
                    names.append(f"{v}:days_above_{spec.thresholds[v]:g}_{suffix}")
    x = np.column_stack(columns) if columns else np.zeros((n, 0))
    return x.astype(np.float32), names


def _usage_sql(span_days: int) -> str:
    """Rows inside some patient's widest window, and rows dated after every index date of
    the patients living at that location (leakage guard)."""
    return f"""
        WITH used AS (
            SELECT count(*) AS n FROM exp e WHERE EXISTS (
                SELECT 1 FROM pts p WHERE p.location = e.location
                AND e.date >= p.index_date - INTERVAL {span_days} DAY AND e.date < p.index_date)
        ), latest AS (
            SELECT location, max(index_date) AS last_index FROM pts GROUP BY location
        )
        SELECT (SELECT n FROM used),
               (SELECT count(*) FROM exp e JOIN latest l USING (location)
                WHERE e.date >= l.last_index)
    """
