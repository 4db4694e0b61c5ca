"""Build a Cohort from ``cohort.yaml``: patients and index dates, outcomes, then each source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medweave.cohort._audit import Audit, SourceAudit
from medweave.cohort._cohort import Cohort
from medweave.config import CohortConfig, IndexRule, OutcomeSpec, load_cohort_config
from medweave.errors import InputError
from medweave.sources import ReadContext
from medweave.sources import get as get_source
from medweave.sources._checks import Rule, ValueChecks
from medweave.sources._io import data_row, parse_dates, read_frame, require_columns
from medweave.sources.ehr_sql import SqlEngine, first_occurrence, outcome_from_events
from medweave.sources.omop import open_omop

__all__ = ["OUTCOME_CHECKS", "build", "build_cohort"]

#: The outcome columns of the index (or outcome) table.
OUTCOME_CHECKS = ValueChecks(
    "index",
    [
        Rule(
            "time", "days from the index date to the event or censoring, >= 0", min=0, required=True
        ),
        Rule("event", "0/1 or true/false", min=0, max=1, integer=True, required=True),
        Rule("outcome", "0/1 or true/false", min=0, max=1, integer=True, required=True),
    ],
)


def build(config_path: str | os.PathLike[str]) -> Cohort:
    """Read ``cohort.yaml`` and build the cohort (paths relative to the YAML's folder)."""
    path = Path(config_path)
    config = load_cohort_config(path)
    return build_cohort(config, base_dir=path.resolve().parent)


def build_cohort(config: CohortConfig, *, base_dir: Path) -> Cohort:
    """Patients and index dates, outcomes, then one block per source, with the audit."""
    audit = Audit()
    index = resolve_index(config.index, base_dir=base_dir, audit=audit)
    patients = attach_outcomes(
        index, config.outcome, rule=config.index, base_dir=base_dir, audit=audit
    )
    cohort = Cohort(
        patients, audit=audit, meta={"name": config.name, "lookback_days": config.lookback_days}
    )
    ctx = ReadContext(
        index=cohort.patients[["patient_id", "index_date"]].copy(),
        lookback_days=config.lookback_days,
        audit=audit,
        base_dir=base_dir,
    )
    for spec in config.sources:
        reader, _ = get_source(spec.type)
        block = reader(spec, ctx)
        src = audit.source(spec.name)
        if not block.present.any():
            raise InputError(_nobody_message(spec.name, block.meta, src, example=cohort.ids[0]))
        cohort.add(block)
        src.patients = int(cohort.modalities[spec.name].present.sum())
        explained = sum(src.patients_missing.values())
        audit.missing(spec.name, "no_data", cohort.n - src.patients - explained)
    reasons = pd.Series(list(audit.excluded_patients.values()), dtype=str)
    audit.flow = {
        # Index rows (or OMOP persons) plus patients seen only in a source.
        "input_patients": audit.source("index").rows_read
        + int(reasons.str.startswith("not in the index").sum()),
        "excluded": {str(k): int(v) for k, v in reasons.value_counts().items()},
        "cohort_patients": cohort.n,
        "modalities_present": {k: int(b.present.sum()) for k, b in cohort.modalities.items()},
    }
    return cohort


def _nobody_message(name: str, meta: dict[str, object], src: SourceAudit, *, example: str) -> str:
    """Why a source gives no cohort patient any data, from what its audit counted."""
    unknown = src.excluded.get("unknown_patient", 0)
    if src.rows_read > 0 and unknown == src.rows_read:
        seen = meta.get("example_source_id")
        hint = f" (the source's ids look like {seen!r})" if seen else ""
        return (
            f"source {name!r}: none of its patients match the cohort's patient ids "
            f"(which look like {example!r}){hint}; check the id column or id type"
        )
    if src.rows_read == 0:
        return f"source {name!r}: holds no records; check its path and contents"
    counted = {**src.excluded, **src.patients_missing}
    top = sorted(counted.items(), key=lambda kv: -kv[1])[:4]
    why = ", ".join(f"{k}: {v}" for k, v in top) or "no reason counted"
    return (
        f"source {name!r}: no cohort patient has usable data in it ({src.rows_read} rows read; "
        f"{why}); fix the data, or remove the source from cohort.yaml"
    )


def resolve_index(rule: IndexRule, *, base_dir: Path, audit: Audit) -> pd.DataFrame:
    """One row per patient: ``patient_id`` (str), ``index_date`` and the table's
    ``index.columns``."""
    if rule.rule == "first_occurrence":
        with _open_omop(rule, base_dir=base_dir) as engine:
            persons, first = first_occurrence(engine, list(rule.concepts or []))
        audit.read("index", len(persons))
        for pid in sorted(set(persons) - set(first["patient_id"])):
            audit.exclude_patient(pid, "no record of the index concepts")
        audit.exclude_rows("index", "no_index_concept", len(persons) - len(first))
        audit.used("index", len(first))
        return first

    path = base_dir / str(rule.table)
    table = read_frame(path, what="index table")
    audit.read("index", len(table))
    columns = [rule.id_column] + ([rule.date_column] if rule.rule == "column" else [])
    require_columns(table, columns, path=path, key="index.id_column / index.date_column")
    require_columns(table, rule.columns, path=path, key="index.columns")
    ids = table[rule.id_column]
    if ids.isna().any():
        pos = int(ids.isna().to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: {rule.id_column} is empty; every row needs an id"
        )
    ids = ids.astype(str)
    dup = ids.duplicated()
    if dup.any():
        pos = int(dup.to_numpy().nonzero()[0][0])
        raise InputError(
            f"{path} {data_row(path, pos)}: patient id {ids.iloc[pos]!r} appears more than once; "
            "the index table needs one row per patient"
        )
    if rule.rule == "fixed":
        dates = pd.Series(pd.Timestamp(str(rule.date)), index=table.index)
    else:
        dates = parse_dates(
            table[rule.date_column],
            path=path,
            column=rule.date_column,
            allow_missing=rule.missing_date == "exclude",
        )
    keep = dates.notna()
    for pid in ids[~keep]:
        audit.exclude_patient(pid, "missing index date")
    audit.exclude_rows("index", "missing_index_date", int((~keep).sum()))
    audit.used("index", int(keep.sum()))
    out = pd.DataFrame({"patient_id": ids[keep].to_numpy(), "index_date": dates[keep].to_numpy()})
    for col in rule.columns:  # carried as they are: a site, a centre, an enrolment wave
        out[col] = table.loc[keep, col].to_numpy()
    return out


def attach_outcomes(
    index: pd.DataFrame, spec: OutcomeSpec, *, rule: IndexRule, base_dir: Path, audit: Audit
) -> pd.DataFrame:
    """Add ``outcome`` (binary) and/or ``time``/``event`` (survival) to the index table."""
    patients = index.copy()
    columns: dict[str, str] = {}
    if spec.binary is not None and spec.binary.column:
        columns["outcome"] = spec.binary.column
    if spec.survival is not None and spec.survival.time_column:
        columns["time"] = spec.survival.time_column
        columns["event"] = str(spec.survival.event_column)
    if columns:
        table_name = spec.table or rule.table
        if table_name is None:
            raise InputError("outcome.table: outcome columns need a table; name one")
        path = base_dir / table_name
        table = read_frame(path, what="outcome table")
        id_col = rule.id_column
        require_columns(table, [id_col, *columns.values()], path=path, key="outcome")
        table = table.assign(**{id_col: table[id_col].astype(str)})
        table["_row"] = np.arange(len(table))
        table = table.set_index(id_col)
        missing = ~patients["patient_id"].isin(table.index)
        for pid in patients.loc[missing, "patient_id"]:
            audit.exclude_patient(pid, "no outcome")
        patients = patients[~missing].reset_index(drop=True)
        rows = table.loc[patients["patient_id"]]
        raw = {col: _booleans(rows[col]) for col in columns.values()}
        values, _ = OUTCOME_CHECKS.apply(
            raw,
            source="outcome",
            on_error="raise",
            audit=audit,
            locate=lambda i: f"{path} {data_row(path, int(rows['_row'].iloc[i]))}",
            rules={col: name for name, col in columns.items()},
            skippable=False,
        )
        for name, col in columns.items():
            patients[name] = values[col].astype(float if name == "time" else bool)
    events_needed = (spec.binary is not None and not spec.binary.column) or (
        spec.survival is not None and not spec.survival.time_column
    )
    if events_needed:
        patients = _outcomes_from_events(patients, spec, rule=rule, base_dir=base_dir)
    return patients


def _booleans(values: pd.Series) -> pd.Series:
    """``true`` / ``false`` (any case) as 1 / 0; other values as they are."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values
    text = values.astype("string").str.strip().str.lower()
    return values.where(~text.isin(["true", "false"]), (text == "true").astype(int))


def _open_omop(rule: IndexRule, *, base_dir: Path) -> SqlEngine:
    if rule.database is None and rule.url is None:
        raise InputError(
            "index: an index or outcome from OMOP concepts or death needs the OMOP database; "
            "set index.database (DuckDB file) or index.url (PostgreSQL)"
        )
    database = None if rule.database is None else base_dir / rule.database
    return open_omop(
        database=database, url=rule.url, schema=rule.schema_name, id_column=rule.id_source
    )


def _outcomes_from_events(
    patients: pd.DataFrame, spec: OutcomeSpec, *, rule: IndexRule, base_dir: Path
) -> pd.DataFrame:
    index = patients[["patient_id", "index_date"]]
    with _open_omop(rule, base_dir=base_dir) as engine:
        if spec.binary is not None and not spec.binary.column:
            got = outcome_from_events(
                engine,
                index,
                concepts=spec.binary.concepts,
                death=spec.binary.death,
                horizon_days=int(spec.binary.horizon_days or 0),
            )
            patients = patients.merge(got[["patient_id", "outcome"]], on="patient_id", how="left")
        if spec.survival is not None and not spec.survival.time_column:
            got = outcome_from_events(
                engine,
                index,
                concepts=spec.survival.concepts,
                death=spec.survival.death,
                horizon_days=1,  # survival uses time and event only
            )
            patients = patients.merge(
                got[["patient_id", "time", "event"]], on="patient_id", how="left"
            )
    return patients
