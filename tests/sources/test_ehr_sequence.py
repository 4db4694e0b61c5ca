"""Event sequences (``form: sequence``): the window, the audit, and the same sequences from
OMOP and FHIR, and from DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from medweave.cohort import Audit, ModalityBlock
from medweave.cohort._block import EVENT_COLUMNS
from medweave.config import parse_cohort_config
from medweave.errors import InputError
from medweave.sources import ReadContext, available, get
from medweave.sources.ehr_sequence import ehr_sequences
from medweave.sources.ehr_sql import SqlEngine
from medweave.sources.omop import open_omop
from medweave.synth import synthesize
from medweave.synth.fhir import export_fhir

from .conftest import event_engine

LOOKBACK = 1095
CDM = ["person", "condition_occurrence", "drug_exposure", "measurement", "visit_occurrence"]
CDM_PG = [*CDM, "concept", "death", "observation_period"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequence") / "cohort"
    synthesize(out, n_patients=120, seed=9, workers=1)
    export_fhir(out)
    return out


@pytest.fixture(scope="module")
def index(cohort: Path) -> pd.DataFrame:
    return pd.read_parquet(cohort / "index.parquet")[["patient_id", "index_date"]]


def _read(kind: str, base: Path, index: pd.DataFrame, **keys: Any) -> tuple[ModalityBlock, Audit]:
    reader, spec_cls = get(kind)
    ctx = ReadContext(index=index, lookback_days=LOOKBACK, audit=Audit(), base_dir=base)
    block = reader(spec_cls(name="ehr_seq", type=kind, form="sequence", **keys), ctx)
    return block, ctx.audit


@pytest.fixture(scope="module")
def from_omop(cohort: Path, index: pd.DataFrame) -> tuple[ModalityBlock, Audit]:
    return _read("omop", cohort, index, database="omop.duckdb")


def _direct(cohort: Path, index: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """The events in the window straight from the CDM tables (DuckDB and pandas), the
    records of cohort patients after the index date, and all records."""
    selects = {
        "condition": ("condition_occurrence", "condition_concept_id", "condition_start_date"),
        "drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
        "measurement": ("measurement", "measurement_concept_id", "measurement_date"),
        "visit": ("visit_occurrence", "visit_concept_id", "visit_start_date"),
    }
    parts = []
    for domain, (table, concept, date) in selects.items():
        value = "t.value_as_number" if domain == "measurement" else "NULL"
        parts.append(
            f"SELECT p.person_source_value AS patient_id, '{domain}' AS domain, "
            f"c.vocabulary_id AS vocabulary, c.concept_code AS code, t.{date} AS event_date, "
            f"CAST({value} AS DOUBLE) AS value FROM {table} AS t "
            "JOIN person AS p ON p.person_id = t.person_id "
            f"JOIN concept AS c ON c.concept_id = t.{concept}"
        )
    con = duckdb.connect(str(cohort / "omop.duckdb"), read_only=True)
    try:
        records = con.sql(" UNION ALL ".join(parts)).df()
    finally:
        con.close()
    merged = records.merge(index, on="patient_id")
    days = (merged["index_date"] - pd.to_datetime(merged["event_date"])).dt.days
    after = int((days < 0).sum())
    inside = merged[(days >= 0) & (days <= LOOKBACK)].assign(days_before_index=days)
    inside = inside.assign(
        code=inside["domain"] + ":" + inside["vocabulary"] + "/" + inside["code"],
        order=inside["patient_id"].map({p: i for i, p in enumerate(index["patient_id"])}),
    )
    inside = inside.sort_values(
        ["order", "days_before_index", "code", "value"],
        ascending=[True, False, True, True],
        na_position="last",
        kind="stable",
    )
    return inside[list(EVENT_COLUMNS)].reset_index(drop=True), after, len(records)


def _same_events(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert a["patient_id"].tolist() == b["patient_id"].tolist()
    assert a["days_before_index"].tolist() == b["days_before_index"].tolist()
    assert a["code"].tolist() == b["code"].tolist()
    np.testing.assert_allclose(a["value"], b["value"], rtol=0, atol=1e-9, equal_nan=True)


# --- the synthetic cohort ---------------------------------------------------------------


def test_no_event_after_the_index_date_and_same_as_a_direct_query(
    cohort: Path, index: pd.DataFrame, from_omop: tuple[ModalityBlock, Audit]
) -> None:
    block, audit = from_omop
    events = block.events
    assert block.kind == "sequence" and block.ids == index["patient_id"].tolist()
    assert block.x.shape == (len(index), 0)
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events["days_before_index"].between(0, LOOKBACK).all()
    # Every event is dated on or before its patient's index date.
    dates = events["patient_id"].map(index.set_index("patient_id")["index_date"])
    event_dates = dates - pd.to_timedelta(events["days_before_index"], unit="D")
    assert (event_dates <= dates).all()
    expected, after, total = _direct(cohort, index)
    _same_events(events, expected)
    # Values where there are measurements, NaN elsewhere.
    measured = events["code"].str.startswith("measurement:")
    assert events.loc[measured, "value"].notna().mean() > 0.9
    assert events.loc[~measured, "value"].isna().all()
    # The audit: every record read, those after the index date excluded and counted.
    src = audit.source("ehr_seq")
    assert after > 0
    assert src.excluded["after_index"] == after
    assert src.rows_read == total
    assert src.rows_used == len(events) == len(expected)
    assert src.rows_read == src.rows_used + sum(src.excluded.values())
    assert block.present.tolist() == index["patient_id"].isin(events["patient_id"]).tolist()
    assert block.meta["events"] == len(events) and block.meta["codes"] > 20


def test_fhir_gives_the_omop_sequences(
    cohort: Path, index: pd.DataFrame, from_omop: tuple[ModalityBlock, Audit]
) -> None:
    omop, omop_audit = from_omop
    block, audit = _read("fhir", cohort, index, path="fhir")
    assert block.ids == omop.ids
    np.testing.assert_array_equal(block.present, omop.present)
    _same_events(block.events, omop.events)
    assert audit.to_dict()["sources"] == omop_audit.to_dict()["sources"]
    for prefix in ("condition:SNOMED/", "drug:RxNorm/", "measurement:LOINC/", "visit:Visit/"):
        assert block.events["code"].str.startswith(prefix).any(), prefix


def test_postgres_gives_the_duckdb_sequences(
    cohort: Path,
    index: pd.DataFrame,
    from_omop: tuple[ModalityBlock, Audit],
    pg_url: str,
    pg_load: Callable[..., str],
) -> None:
    schema = pg_load(cohort / "omop.duckdb", tables=CDM_PG)
    audit = Audit()
    with open_omop(url=pg_url, schema=schema) as engine:
        assert engine.dialect == "postgres"
        block = ehr_sequences(
            engine, index=index, lookback_days=LOOKBACK, audit=audit, source="ehr_seq"
        )
    duck, duck_audit = from_omop
    assert block.meta["engine"] == "postgres"
    pd.testing.assert_frame_equal(block.events, duck.events)
    np.testing.assert_array_equal(block.present, duck.present)
    assert audit.to_dict() == duck_audit.to_dict()


def test_domains_and_the_registry(cohort: Path, index: pd.DataFrame) -> None:
    block, _ = _read("omop", cohort, index, database="omop.duckdb", domains=["measurement"])
    assert block.events["code"].str.startswith("measurement:LOINC/").all()
    assert "form: sequence" in available()["omop"]
    assert "form: sequence" in available()["fhir"]


def test_spec_keys_are_checked() -> None:
    _, spec_cls = get("omop")
    with pytest.raises(ValidationError, match="min_patients applies to form: features"):
        spec_cls(name="s", type="omop", database="x", form="sequence", min_patients=3)
    with pytest.raises(ValidationError, match="form"):
        spec_cls(name="s", type="omop", database="x", form="events")
    raw = {
        "name": "c",
        "index": {"rule": "column", "table": "index.parquet"},
        "outcome": {"binary": {"column": "outcome"}},
        "sources": [{"name": "s", "type": "fhir", "path": "fhir", "form": "sequnce"}],
    }
    with pytest.raises(InputError, match=r"sources\[0\]\.form"):
        parse_cohort_config(raw)


# --- hand-made records, on both engines -------------------------------------------------

INDEX = dt.date(2021, 3, 31)
D = dt.timedelta


def _records() -> pd.DataFrame:
    rows = [
        ("a", "measurement", "LOINC", "1988-5", INDEX - D(100), 1.0),  # lookback boundary
        ("a", "measurement", "LOINC", "1988-5", INDEX - D(101), 9.0),  # before the lookback
        ("a", "measurement", "LOINC", "1988-5", INDEX, 2.0),  # on the index date: used
        ("a", "condition", "SNOMED", "13645005", INDEX, None),
        ("a", "measurement", "LOINC", "1988-5", INDEX + D(1), 3.0),  # after: excluded
        ("a", "visit", None, "IP", INDEX - D(5), None),  # no vocabulary
        ("b", "drug", "RxNorm", "8640", INDEX - D(7), None),
        ("b", "drug", "RxNorm", "8640", None, None),  # no date
        ("zz", "drug", "RxNorm", "8640", INDEX, None),  # not in the cohort
    ]
    df = pd.DataFrame(
        rows, columns=["patient_id", "domain", "vocabulary", "code", "event_date", "value"]
    )
    return df.assign(unit=None)


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[SqlEngine]:
    persons = pd.DataFrame(
        {"patient_id": ["a", "b"], "sex": ["F", "M"], "year_of_birth": [1950, 1960]}
    ).assign(birth_date=None)
    tables = {"mw_events": _records(), "mw_persons": persons}
    with event_engine(request, tables, {"drug": "table drugs.csv"}) as eng:
        yield eng


def _hand(eng: SqlEngine, **kw: Any) -> tuple[ModalityBlock, Audit]:
    audit = Audit()
    index = pd.DataFrame({"patient_id": ["a", "b", "c"], "index_date": pd.Timestamp(INDEX)})
    block = ehr_sequences(eng, index=index, lookback_days=100, audit=audit, source="s", **kw)
    return block, audit


def test_window_edges_and_audit(engine: SqlEngine) -> None:
    block, audit = _hand(engine, on_error="skip")
    ev = block.events
    assert ev["patient_id"].tolist() == ["a", "a", "a", "b"]
    assert ev["days_before_index"].tolist() == [100, 0, 0, 7]
    assert ev["code"].tolist() == [
        "measurement:LOINC/1988-5",
        "condition:SNOMED/13645005",
        "measurement:LOINC/1988-5",
        "drug:RxNorm/8640",
    ]
    np.testing.assert_array_equal(ev["value"], [1.0, np.nan, 2.0, np.nan])
    assert block.present.tolist() == [True, True, False]  # c has no record
    src = audit.source("s")
    assert src.patients_missing == {"no_person_record": 1}  # c: no person row either
    assert src.rows_read == 9 and src.rows_used == 4
    assert dict(src.excluded) == {
        "after_index": 1,
        "before_lookback": 1,
        "missing_code": 1,
        "missing_date": 1,
        "unknown_patient": 1,
    }
    assert src.patients == 2


def test_missing_date_raises_naming_the_table(engine: SqlEngine) -> None:
    with pytest.raises(InputError, match=r"1 row\(s\) of table drugs.csv have no date"):
        _hand(engine)
