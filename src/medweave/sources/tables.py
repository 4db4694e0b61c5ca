"""Flat tables: CSV/Parquet, wide (one row per patient) or long events (id, time, code, value).

Both are read with :func:`~medweave.sources._io.read_frame` (CSV as text with a declared
schema: encoding, byte-order mark and delimiter found and kept, duplicated column names
refused) and their values converted through the readers' value checks (:data:`CHECKS`,
:data:`EVENTS_CHECKS`): a number that is text (``'6.1%'``, ``'1,5'``) or not finite
(``inf``), a date that is not ISO 8601 (``01/03/2020`` is refused as ambiguous) or is
empty is an error naming the file, line, column and value, or with ``on_error: skip`` the
row is left out and counted (``{column}:not_a_number``, ``{column}:non_finite``,
``{column}:not_a_date``, ``{column}:missing``).

**table** (one row per patient, or several dated ones: the latest on or before the index
date is kept). A patient with a row is present unless every feature value of that row is
missing (the row is counted as ``no_values``, and the patient missing for that reason); a
patient without a row is not present. A second row of a patient without ``date_column``
is an error, or with ``on_error: skip`` every row of that patient is left out
(``duplicate_patient``).

**events** go through the same event model and feature SQL as OMOP and FHIR
(:mod:`medweave.sources.ehr_sql`), so a code's count, last value, slope and so on mean the
same whichever format it came from; with ``form: sequence`` they become event sequences
(:mod:`medweave.sources.ehr_sequence`). There is no person table: every index patient has
a person row, so a patient is present when they have at least one record in the window
(else missing as ``no_records_in_window``). Values are checked in the window only (the
records that would be used); dates of every cohort patient's records are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._checks import Rule, ValueChecks
from medweave.sources._ehr_spec import EhrSpec, ehr_block
from medweave.sources._io import data_row, read_frame, require_columns
from medweave.sources.ehr_sql import DOMAINS, SqlEngine

__all__ = ["CHECKS", "EVENTS_CHECKS", "EventsSpec", "TableSpec"]

_ISO = "an ISO 8601 date (YYYY-MM-DD)"
#: Value checks of ``table``: every feature column that is not categorical, and the dates.
CHECKS = ValueChecks(
    "table",
    [
        Rule("*", "a finite number, or empty (list a text column under categorical)"),
        Rule("date_column", _ISO, required=True, date=True),
    ],
)
#: Value checks of ``events``: the value and time columns.
EVENTS_CHECKS = ValueChecks(
    "events",
    [
        Rule("value_column", "a finite number, or empty (a record without a value)"),
        Rule("time_column", _ISO, required=True, date=True),
    ],
)


class TableSpec(SourceSpec):
    """``type: table``: one row per patient (or several, dated: the latest not after the
    index date is kept). Numeric columns are features; ``categorical`` ones are one-hot."""

    path: str
    id_column: str = "patient_id"
    columns: list[str] | None = None
    categorical: list[str] = Field(default_factory=list)
    date_column: str | None = None
    kind: Literal["tabular", "exposure"] = "tabular"


class EventsSpec(EhrSpec):
    """``type: events``: long events (id, time, code, value[, unit]) summarised per code, or
    kept as sequences (``form: sequence``); ``domains`` and ``min_patients`` as for OMOP."""

    path: str
    id_column: str = "patient_id"
    time_column: str = "time"
    code_column: str = "code"
    value_column: str | None = "value"
    unit_column: str | None = None
    vocabulary: str = "local"
    domain: Literal["condition", "drug", "measurement", "visit"] | None = None


def _dates(
    frame: pd.DataFrame,
    column: str,
    field: str,
    checks: ValueChecks,
    spec: TableSpec | EventsSpec,
    ctx: ReadContext,
    active: np.ndarray,
) -> tuple[pd.Series, np.ndarray]:
    """The ``column`` of ``frame`` as dates checked by rule ``field`` among ``active`` rows
    (NaT where empty or bad), and the rows to keep."""
    path = ctx.resolve(spec.path)
    parsed, keep = checks.apply(
        {column: frame[column]},
        source=spec.name,
        on_error=spec.on_error,
        audit=ctx.audit,
        locate=lambda i: f"{path} {data_row(path, i)}",
        rules={column: field},
        active=active,
    )
    return pd.Series(parsed[column], index=frame.index), keep


@register("table", spec=TableSpec, description="flat CSV/Parquet table, one row per patient")
def read_table(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, TableSpec)
    path = ctx.resolve(spec.path)
    frame = read_frame(path).reset_index(drop=True)
    require_columns(frame, [spec.id_column], path=path, key="id_column")
    if spec.date_column is not None:
        require_columns(frame, [spec.date_column], path=path, key="date_column")
    skip = {spec.id_column, spec.date_column}
    columns = spec.columns or [c for c in frame.columns if c not in skip]
    require_columns(frame, columns, path=path, key="columns")
    name, audit = spec.name, ctx.audit
    audit.read(name, len(frame))
    ids = frame[spec.id_column].astype(str)
    index = ctx.index.set_index(ctx.index["patient_id"].astype(str))["index_date"]
    known = ids.isin(index.index).to_numpy()
    audit.exclude_rows(name, "unknown_patient", int((~known).sum()))
    audit.unknown_patients(name, sorted(set(ids[~known])))
    keep = known.copy()
    dates = None
    if spec.date_column is not None:
        dates, dated = _dates(frame, spec.date_column, "date_column", CHECKS, spec, ctx, keep)
        keep &= dated
        after = keep & (dates.to_numpy() > index.reindex(ids).to_numpy())
        audit.exclude_rows(name, "after_index", int(after.sum()))
        keep &= ~after

    numeric = [c for c in columns if c not in spec.categorical]
    numbers, valid = CHECKS.apply(
        {c: frame[c] for c in numeric},
        source=name,
        on_error=spec.on_error,
        audit=audit,
        locate=lambda i: f"{path} {data_row(path, i)}",
        rules=dict.fromkeys(numeric, "*"),
        active=keep,
    )
    keep &= valid
    # A row whose every feature value is missing holds nothing: not a presence.
    empty = np.ones(len(frame), dtype=bool)
    for col in columns:
        filled = frame[col].notna() if col in spec.categorical else ~np.isnan(numbers[col])
        empty &= ~np.asarray(filled, dtype=bool)
    empty &= keep
    audit.exclude_rows(name, "no_values", int(empty.sum()))
    keep &= ~empty
    with_rows = set(ids[empty])

    if dates is not None:
        # Per patient, the latest row left (rows sorted by id, then date).
        order = np.lexsort((dates.to_numpy(), ids.to_numpy()))
        sub = pd.DataFrame({"id": ids.to_numpy(), "keep": keep}).iloc[order]
        latest = np.zeros(len(frame), dtype=bool)
        latest[sub[sub["keep"]].drop_duplicates("id", keep="last").index.to_numpy()] = True
        audit.exclude_rows(name, "older_row", int(keep.sum() - latest.sum()))
        keep = latest
    else:
        keep = _one_row_each(ids, keep, path=path, source=name, on_error=spec.on_error, audit=audit)
    kept = set(ids[keep])
    audit.missing(name, "no_values", len(with_rows - kept))
    audit.missing(name, "no_row", len(set(index.index) - set(ids)))

    parts: list[pd.DataFrame] = []
    for col in columns:
        if col in spec.categorical:
            parts.append(
                pd.get_dummies(frame[col].astype("string"), prefix=col, prefix_sep="=", dtype=float)
            )
        else:
            parts.append(pd.DataFrame({col: numbers[col]}, index=frame.index))
    features = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)
    audit.used(name, int(keep.sum()))
    return ModalityBlock(
        name=name,
        kind=spec.kind,
        ids=ids[keep].tolist(),
        x=features[keep].to_numpy(dtype=np.float32),
        feature_names=[str(c) for c in features.columns],
        meta={"example_source_id": ids.iloc[0] if len(ids) else None},
    )


def _one_row_each(
    ids: pd.Series,
    keep: np.ndarray,
    *,
    path: Path,
    source: str,
    on_error: Literal["raise", "skip"],
    audit: Audit,
) -> np.ndarray:
    """``keep`` without the patients who have a second row (an error under ``raise``)."""
    dup = (ids.duplicated() & keep).to_numpy()
    if not dup.any():
        return keep
    pos = int(np.flatnonzero(dup)[0])
    if on_error == "raise":
        raise InputError(
            f"{path} {data_row(path, pos)}: patient {ids.iloc[pos]!r} has a second row; "
            "give one row per patient, or a date_column to keep the latest, or set "
            f"on_error: skip in source {source!r} to leave such patients out"
        )
    twice = keep & ids.isin(set(ids[dup])).to_numpy()
    audit.exclude_rows(source, "duplicate_patient", int(twice.sum()))
    return keep & ~twice


@register(
    "events",
    spec=EventsSpec,
    description="long CSV/Parquet events (id, time, code, value) summarised per code",
)
def read_events(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, EventsSpec)
    path = ctx.resolve(spec.path)
    frame = read_frame(path, what="events table").reset_index(drop=True)
    cols = [spec.id_column, spec.time_column, spec.code_column]
    cols += [c for c in (spec.value_column, spec.unit_column) if c is not None]
    require_columns(frame, cols, path=path, key="*_column")
    ids = frame[spec.id_column].astype(str)
    index = ctx.index.set_index(ctx.index["patient_id"].astype(str))["index_date"]
    known = ids.isin(index.index).to_numpy()
    dates, keep = _dates(frame, spec.time_column, "time_column", EVENTS_CHECKS, spec, ctx, known)
    value = pd.Series(np.nan, index=frame.index)
    if spec.value_column:
        at = index.reindex(ids).to_numpy()
        day = dates.to_numpy()
        start = at - np.timedelta64(int(ctx.lookback_days), "D")
        in_window = known & keep & (day <= at) & (day >= start)
        numbers, valid = EVENTS_CHECKS.apply(
            {spec.value_column: frame[spec.value_column]},
            source=spec.name,
            on_error=spec.on_error,
            audit=ctx.audit,
            locate=lambda i: f"{path} {data_row(path, i)}",
            rules={spec.value_column: "value_column"},
            active=in_window,
        )
        value = pd.Series(numbers[spec.value_column], index=frame.index)
        keep &= valid
    # Rows left out here are read and counted here; the SQL counts the rest.
    ctx.audit.read(spec.name, int((~keep).sum()))
    domain = spec.domain or None
    events = pd.DataFrame(
        {
            "patient_id": ids,
            "domain": domain if domain else np.where(value.notna(), "measurement", "condition"),
            "vocabulary": spec.vocabulary,
            "code": frame[spec.code_column].astype(str),
            "event_date": dates.dt.date,
            "value": value.astype(float),
            "unit": frame[spec.unit_column].astype(str) if spec.unit_column else None,
        }
    )[keep]
    persons = pd.DataFrame(
        {
            "patient_id": ctx.index["patient_id"].astype(str),
            "sex": pd.Series([None] * len(ctx.index), dtype="string"),
            "year_of_birth": pd.Series([None] * len(ctx.index), dtype="Int32"),
            "birth_date": pd.Series([None] * len(ctx.index), dtype="datetime64[ns]").dt.date,
        }
    )
    with SqlEngine.duckdb(label=str(path)) as engine:
        engine.register("mw_events", events)
        engine.register("mw_persons", persons)
        engine.origins = dict.fromkeys(DOMAINS, str(path))
        block = ehr_block(engine, spec, ctx)
    unknown = sorted(set(events["patient_id"]) - set(index.index))
    ctx.audit.unknown_patients(spec.name, unknown)
    if spec.form == "sequence":
        return block
    # A long table has no demographics: drop the all-NaN age/sex columns it would carry.
    cols_kept = [
        j for j, n in enumerate(block.feature_names) if n not in ("age_at_index", "sex_male")
    ]
    present = block.present  # a record in the window (see ehr_features)
    return ModalityBlock(
        name=block.name,
        kind="tabular",
        ids=[pid for pid, p in zip(block.ids, present, strict=True) if p],
        x=block.x[present][:, cols_kept],
        feature_names=[block.feature_names[j] for j in cols_kept],
        meta={**block.meta, "example_source_id": next(iter(events["patient_id"]), None)},
    )
