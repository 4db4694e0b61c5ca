"""Environmental exposures: a (location, date, variables) table joined to each patient's home
location over windows before the index date.

Per variable, window and lag: the mean, the maximum and (with a threshold) the number of
days above it, over the ``w`` days that end ``lag`` days before the index date (the index
day itself is not included). A window with data on fewer than ``min_coverage`` of its days
gives NaN rather than a mean of a few days.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._io import read_frame, require_columns

__all__ = ["ExposureSpec", "read_exposures"]


class ExposureSpec(SourceSpec):
    """``type: exposures``. Link patients to locations with ``locations`` (a table of
    patient_id, location) or ``omop`` (a DuckDB OMOP file: person.location_id -> location.zip)."""

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
    min_coverage: float = Field(default=0.8, gt=0, le=1)


def _patient_locations(spec: ExposureSpec, ctx: ReadContext) -> pd.DataFrame:
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
                "CAST(l.zip AS VARCHAR) AS location FROM person p "
                "JOIN location l ON p.location_id = l.location_id"
            ).df()
        except duckdb.Error as exc:
            raise InputError(f"{path}: cannot link persons to locations ({exc})") from None
        finally:
            con.close()
        return frame
    path = ctx.resolve(spec.locations or "")
    frame = read_frame(path, what="locations table")
    cols = [spec.locations_id_column, spec.locations_location_column]
    require_columns(frame, cols, path=path, key="locations_*_column")
    frame = frame[cols].dropna()
    frame.columns = ["patient_id", "location"]
    return frame.astype(str)


@register(
    "exposures",
    spec=ExposureSpec,
    description="environmental exposures keyed by place and date (CSV/Parquet)",
)
def read_exposures(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, ExposureSpec)
    path = ctx.resolve(spec.path)
    table = read_frame(path, what="exposure table")
    require_columns(
        table, [spec.location_column, spec.date_column], path=path, key="location/date_column"
    )
    variables = spec.variables or [
        c
        for c in table.columns
        if c not in (spec.location_column, spec.date_column)
        and pd.api.types.is_numeric_dtype(table[c])
    ]
    require_columns(table, variables, path=path, key="variables")
    for name in spec.thresholds:
        if name not in variables:
            raise InputError(
                f"source {spec.name!r}: threshold for {name!r}, which is not among the variables "
                f"{variables}"
            )
    exp = pd.DataFrame(
        {
            "location": table[spec.location_column].astype(str),
            "date": pd.to_datetime(table[spec.date_column], errors="coerce"),
        }
    )
    if exp["date"].isna().any():
        pos = int(exp["date"].isna().to_numpy().nonzero()[0][0])
        raise InputError(f"{path} row {pos + 1}: {spec.date_column} is empty or not a date")
    for var in variables:
        exp[var] = pd.to_numeric(table[var], errors="coerce")
    if exp.duplicated(["location", "date"]).any():
        pos = int(exp.duplicated(["location", "date"]).to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} row {pos + 1}: a second row for location {exp['location'].iloc[pos]!r} on "
            f"{exp['date'].iloc[pos].date()}; keep one row per location and day"
        )
    ctx.audit.read(spec.name, len(exp))

    links = _patient_locations(spec, ctx)
    cohort = ctx.index[["patient_id", "index_date"]].astype({"patient_id": str})
    pts = cohort.merge(links, on="patient_id", how="inner")
    known_locations = set(exp["location"])
    pts_ok = pts[pts["location"].isin(known_locations)]
    ctx.audit.missing(spec.name, "no home location", len(cohort) - len(pts))
    ctx.audit.missing(spec.name, "location not in the exposure table", len(pts) - len(pts_ok))

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
    ctx.audit.missing(spec.name, "no exposure data in the windows", int((~present).sum()))
    keep = np.flatnonzero(present)
    return ModalityBlock(
        name=spec.name,
        kind="exposure",
        ids=pts_ok["patient_id"].iloc[keep].tolist(),
        x=features[keep],
        feature_names=names,
        meta={"variables": variables, "windows_days": spec.windows_days, "lag_days": spec.lag_days},
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
