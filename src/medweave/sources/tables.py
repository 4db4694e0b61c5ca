"""Flat tables: CSV/Parquet, wide (one row per patient) or long events (id, time, code, value).

Long events go through the same event model and feature SQL as OMOP and FHIR
(:mod:`medweave.sources.ehr_sql`), so a code's count, last value, slope and so on mean the
same whichever format it came from; with ``form: sequence`` they become event sequences
(:mod:`medweave.sources.ehr_sequence`), as for OMOP and FHIR.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._ehr_spec import EhrSpec, ehr_block
from medweave.sources._io import data_row, parse_dates, read_frame, require_columns
from medweave.sources.ehr_sql import DOMAINS, SqlEngine

__all__ = ["EventsSpec", "TableSpec"]


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


@register("table", spec=TableSpec, description="flat CSV/Parquet table, one row per patient")
def read_table(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, TableSpec)
    path = ctx.resolve(spec.path)
    frame = read_frame(path).reset_index(drop=True)
    require_columns(frame, [spec.id_column], path=path, key="id_column")
    ctx.audit.read(spec.name, len(frame))
    ids = frame[spec.id_column].astype(str)
    index = ctx.index.set_index(ctx.index["patient_id"].astype(str))["index_date"]
    known = ids.isin(index.index)
    ctx.audit.exclude_rows(spec.name, "unknown_patient", int((~known).sum()))
    ctx.audit.unknown_patients(spec.name, sorted(set(ids[~known])))
    keep = known.to_numpy().copy()
    if spec.date_column is not None:
        require_columns(frame, [spec.date_column], path=path, key="date_column")
        dates = parse_dates(frame[spec.date_column], path=path, column=spec.date_column)
        after = keep & (dates.to_numpy() > index.reindex(ids).to_numpy())
        ctx.audit.exclude_rows(spec.name, "after_index", int(after.sum()))
        keep &= ~after
        # Per patient, the latest row left (rows are sorted by id, then date).
        sub = pd.DataFrame({"id": ids.to_numpy(), "keep": keep, "date": dates.to_numpy()})
        sub = sub.iloc[np.lexsort((dates.to_numpy(), ids.to_numpy()))]
        last = sub[sub["keep"]].drop_duplicates("id", keep="last").index.to_numpy()
        latest = np.zeros(len(frame), dtype=bool)
        latest[last] = True
        ctx.audit.exclude_rows(spec.name, "older_row", int(keep.sum() - latest.sum()))
        keep = latest
    else:
        dup = ids.duplicated() & known
        if dup.any():
            pos = int(np.flatnonzero(dup.to_numpy())[0])
            raise InputError(
                f"{path} {data_row(path, pos)}: patient {ids.iloc[pos]!r} has a second row; "
                "give one row per patient, or a date_column to keep the latest"
            )
    skip = {spec.id_column, spec.date_column}
    columns = spec.columns or [c for c in frame.columns if c not in skip]
    require_columns(frame, columns, path=path, key="columns")
    parts: list[pd.DataFrame] = []
    for col in columns:
        if col in spec.categorical:
            parts.append(
                pd.get_dummies(frame[col].astype("string"), prefix=col, prefix_sep="=", dtype=float)
            )
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna() & keep
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path} {data_row(path, pos)}: column {col!r} holds {frame[col].iloc[pos]!r}, "
                "not a number; list the column under categorical to one-hot encode it"
            )
        parts.append(values.rename(col).astype(float).to_frame())
    features = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)
    ctx.audit.used(spec.name, int(keep.sum()))
    return ModalityBlock(
        name=spec.name,
        kind=spec.kind,
        ids=ids[keep].tolist(),
        x=features[keep].to_numpy(dtype=np.float32),
        feature_names=[str(c) for c in features.columns],
        meta={"example_source_id": ids.iloc[0] if len(ids) else None},
    )


@register(
    "events",
    spec=EventsSpec,
    description="long CSV/Parquet events (id, time, code, value) summarised per code",
)
def read_events(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, EventsSpec)
    path = ctx.resolve(spec.path)
    frame = read_frame(path, what="events table")
    cols = [spec.id_column, spec.time_column, spec.code_column]
    cols += [c for c in (spec.value_column, spec.unit_column) if c is not None]
    require_columns(frame, cols, path=path, key="*_column")
    dates = parse_dates(
        frame[spec.time_column],
        path=path,
        column=spec.time_column,
        allow_missing=spec.on_error == "skip",
    )
    value = (
        pd.to_numeric(frame[spec.value_column], errors="coerce")
        if spec.value_column
        else pd.Series(np.nan, index=frame.index)
    )
    domain = spec.domain or None
    events = pd.DataFrame(
        {
            "patient_id": frame[spec.id_column].astype(str),
            "domain": domain if domain else np.where(value.notna(), "measurement", "condition"),
            "vocabulary": spec.vocabulary,
            "code": frame[spec.code_column].astype(str),
            "event_date": dates.dt.date,
            "value": value.astype(float),
            "unit": frame[spec.unit_column].astype(str) if spec.unit_column else None,
        }
    )
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
    unknown = sorted(set(events["patient_id"]) - set(ctx.index["patient_id"].astype(str)))
    ctx.audit.unknown_patients(spec.name, unknown)
    if spec.form == "sequence":
        return block
    # A long table has no demographics: drop the all-NaN age/sex columns it would carry.
    keep = [j for j, n in enumerate(block.feature_names) if n not in ("age_at_index", "sex_male")]
    counts = [j for j, n in enumerate(block.feature_names) if n.endswith(":count")]
    present = (np.nan_to_num(block.x[:, counts]) > 0).any(axis=1)  # an event in the window
    return ModalityBlock(
        name=block.name,
        kind="tabular",
        ids=[pid for pid, p in zip(block.ids, present, strict=True) if p],
        x=block.x[present][:, keep],
        feature_names=[block.feature_names[j] for j in keep],
        meta={**block.meta, "example_source_id": next(iter(events["patient_id"]), None)},
    )
