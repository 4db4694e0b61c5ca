"""The event model's features on hand-made records, on DuckDB and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources.ehr_sequence import ehr_sequences
from medweave.sources.ehr_sql import (
    SqlEngine,
    ehr_features,
    features_sql,
    first_occurrence,
    outcome_from_events,
    to_postgres,
)

from .conftest import event_engine

INDEX = dt.date(2020, 6, 30)
LOOKBACK = 100
D = dt.timedelta


def _events() -> pd.DataFrame:
    rows = [
        # p1: CRP on the lookback boundary, one day before it, a tie on the index date,
        # and one after the index date.
        ("p1", "measurement", "LOINC", "1988-5", INDEX - D(LOOKBACK), 1.0),
        ("p1", "measurement", "LOINC", "1988-5", INDEX - D(LOOKBACK + 1), 50.0),
        ("p1", "measurement", "LOINC", "1988-5", INDEX - D(60), 3.0),
        ("p1", "measurement", "LOINC", "1988-5", INDEX, 2.0),
        ("p1", "measurement", "LOINC", "1988-5", INDEX, 4.0),
        ("p1", "measurement", "LOINC", "1988-5", INDEX - D(30), None),  # no value
        ("p1", "measurement", "LOINC", "1988-5", INDEX + D(1), 99.0),
        # p2: one CRP value only: no slope.
        ("p2", "measurement", "LOINC", "1988-5", INDEX - D(10), 7.0),
        # A condition in three patients, a drug in one (rare with min_patients=2).
        ("p3", "condition", "SNOMED", "13645005", INDEX - D(5), None),
        ("p3", "condition", "SNOMED", "13645005", INDEX - D(50), None),
        ("p4", "condition", "SNOMED", "13645005", INDEX - D(20), None),
        ("p5", "condition", "SNOMED", "13645005", INDEX, None),
        ("p5", "condition", "SNOMED", "13645005", INDEX + D(400), None),  # outcome event
        ("p6", "drug", "RxNorm", "8640", INDEX - D(3), None),
        ("p6", "visit", "Visit", "IP", INDEX - D(3), None),
        ("p1", "visit", "Visit", "IP", INDEX - D(90), None),
        # Not in the cohort.
        ("zz", "condition", "SNOMED", "13645005", INDEX, None),
    ]
    df = pd.DataFrame(
        rows, columns=["patient_id", "domain", "vocabulary", "code", "event_date", "value"]
    )
    df["unit"] = ["mg/L" if d == "measurement" else None for d in df["domain"]]
    return df


def _persons() -> pd.DataFrame:
    # p4-p6 have person rows without demographics: a patient is present only with a
    # person row (and a record in the window); p7 has neither.
    return pd.DataFrame(
        {
            "patient_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "sex": ["M", "F", None, None, None, None],
            "year_of_birth": [1950, 1960, None, None, None, None],
            "birth_date": [dt.date(1950, 6, 30), None, None, None, None, None],
        }
    )


def _index() -> pd.DataFrame:
    ids = [f"p{i}" for i in range(1, 8)]  # p7 has no records at all
    return pd.DataFrame({"patient_id": ids, "index_date": pd.Timestamp(INDEX)})


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> Iterator[SqlEngine]:
    tables = {"mw_events": _events(), "mw_persons": _persons()}
    origins = {"drug": "table drugs.csv", "condition": "table conditions.csv"}
    with event_engine(request, tables, origins) as eng:
        yield eng


def _features(eng: SqlEngine, **kw: object) -> tuple[pd.DataFrame, Audit, ModalityBlock]:
    audit = Audit()
    args: dict[str, object] = {"lookback_days": LOOKBACK, "min_patients": 2, **kw}
    block = ehr_features(eng, index=_index(), audit=audit, source="ehr", **args)  # type: ignore[arg-type]
    frame = pd.DataFrame(block.x.astype(np.float64), index=block.ids, columns=block.feature_names)
    return frame, audit, block


def test_window_statistics_and_ties(engine: SqlEngine) -> None:
    f, _, block = _features(engine)
    crp = "measurement:LOINC/1988-5"
    assert block.kind == "tabular" and block.name == "ehr"
    assert block.ids == [f"p{i}" for i in range(1, 8)]
    # p1: values 1 (boundary, -100 d), 3 (-60 d), 2 and 4 (index date); 50 and 99 are out.
    assert f.loc["p1", f"{crp}:count"] == 5  # four values and one record without a value
    assert f.loc["p1", f"{crp}:last"] == 4.0  # a tie on the last date: the largest
    assert f.loc["p1", f"{crp}:mean"] == pytest.approx(2.5)
    assert f.loc["p1", f"{crp}:min"] == 1.0
    assert f.loc["p1", f"{crp}:max"] == 4.0
    assert f.loc["p1", f"{crp}:days_since_last"] == 0
    slope = np.polyfit([-100.0, -60.0, 0.0, 0.0], [1.0, 3.0, 2.0, 4.0], 1)[0] * 365.25
    assert f.loc["p1", f"{crp}:slope_per_year"] == pytest.approx(slope, rel=1e-6)
    # p2: one value: no slope; p3 has no CRP: count 0, the rest NaN.
    assert f.loc["p2", f"{crp}:last"] == 7.0
    assert f[f"{crp}:slope_per_year"].isna().loc["p2"]
    assert f.loc["p2", f"{crp}:days_since_last"] == 10
    assert f.loc["p3", f"{crp}:count"] == 0
    assert f.loc[["p3", "p7"], [f"{crp}:last", f"{crp}:mean"]].isna().all().all()


def test_codes_counts_and_order(engine: SqlEngine) -> None:
    f, _, _ = _features(engine)
    copd = "condition:SNOMED/13645005"
    # p7 has no record (and no person row): absent, its row NaN rather than zero counts.
    np.testing.assert_array_equal(f[f"{copd}:count"], [0, 0, 2, 1, 1, 0, np.nan])
    assert f.loc["p3", f"{copd}:days_since_last"] == 5
    assert f.loc["p5", f"{copd}:days_since_last"] == 0
    assert f[f"{copd}:days_since_last"].isna().tolist() == [True, True] + [False] * 3 + [True] * 2
    assert [c for c in f.columns if c.endswith(":count")] == [
        f"{copd}:count",
        "measurement:LOINC/1988-5:count",
        "visit:Visit/IP:count",
    ]
    assert "drug:RxNorm/8640:count" not in f.columns  # one patient < min_patients
    assert list(f.columns[:2]) == ["age_at_index", "sex_male"]
    measure_stats = [c.rsplit(":", 1)[1] for c in f.columns if c.startswith("measurement:")]
    assert measure_stats == [
        "count",
        "last",
        "mean",
        "min",
        "max",
        "slope_per_year",
        "days_since_last",
    ]
    f1, _, _ = _features(engine, min_patients=1)
    assert f1.loc["p6", "drug:RxNorm/8640:count"] == 1


def test_demographics(engine: SqlEngine) -> None:
    f, _, _ = _features(engine)
    age = (INDEX - dt.date(1950, 6, 30)).days / 365.25
    assert f.loc["p1", "age_at_index"] == pytest.approx(age, rel=1e-6)
    assert f.loc["p2", "age_at_index"] == 60.0  # year of birth only
    assert f["sex_male"].tolist()[:2] == [1.0, 0.0]
    assert f.loc[["p3"], ["sex_male", "age_at_index"]].isna().all().all()
    assert f.loc[["p4", "p7"], ["age_at_index", "sex_male"]].isna().all().all()


def test_audit_counts_every_row(engine: SqlEngine) -> None:
    _, audit, _ = _features(engine)
    src = audit.sources["ehr"]
    assert src.rows_read == len(_events())
    assert src.excluded["after_index"] == 2
    assert src.excluded["before_lookback"] == 1
    assert src.excluded["unknown_patient"] == 1
    assert src.excluded["rare_code"] == 1  # the drug
    assert src.rows_used == len(_events()) - 5
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read
    assert src.patients == 6  # p1-p6; p7 has neither records nor a person row


def test_missing_date_raises_or_is_counted(engine: SqlEngine) -> None:
    events = _events()
    events.loc[events["domain"] == "drug", "event_date"] = None
    engine.register("mw_events", events)
    with pytest.raises(InputError, match=r"1 row\(s\) of table drugs.csv have no date"):
        _features(engine)
    f, audit, _ = _features(engine, on_error="skip", min_patients=1)
    assert audit.sources["ehr"].excluded["missing_date"] == 1
    assert "drug:RxNorm/8640:count" not in f.columns


def test_records_without_code(engine: SqlEngine) -> None:
    events = _events()
    events.loc[events["domain"] == "visit", "code"] = None
    engine.register("mw_events", events)
    f, audit, _ = _features(engine)
    assert audit.sources["ehr"].excluded["missing_code"] == 2
    assert not any(c.startswith("visit:") for c in f.columns)


def test_engines_agree(pg_url: str) -> None:
    blocks = []
    for eng in (SqlEngine.duckdb(), SqlEngine.postgres(pg_url)):
        with eng:
            eng.register("mw_events", _events())
            eng.register("mw_persons", _persons())
            blocks.append(_features(eng, min_patients=1)[2])
    assert blocks[0].feature_names == blocks[1].feature_names
    np.testing.assert_array_equal(blocks[0].x, blocks[1].x)


def test_transpiled_sql() -> None:
    joined = "mw_events AS e LEFT JOIN mw_index AS i ON e.patient_id = i.patient_id"
    sql = features_sql(joined=joined, domains=["measurement"], lookback_days=30, min_patients=5)
    pg = to_postgres(sql)
    assert "FIRST(" in sql and "FIRST(" not in pg
    assert "ARRAY_AGG(value ORDER BY days_before" in pg and ")[1]" in pg
    assert "MAKE_DATE(1, 2, 3)" in to_postgres("SELECT MAKE_DATE(1, 2, 3)")


def test_first_occurrence_and_outcomes(engine: SqlEngine) -> None:
    engine.register("mw_persons", _persons().iloc[:3])
    persons, first = first_occurrence(engine, ["SNOMED/13645005"])
    assert persons == ["p1", "p2", "p3"]
    assert first["patient_id"].tolist() == ["p3"]  # p4, p5 are not in mw_persons
    assert first["index_date"].tolist() == [pd.Timestamp(INDEX - D(50))]
    # Integer concept ids go through mw_concepts.
    engine.register(
        "mw_concepts",
        pd.DataFrame({"concept_id": [255573], "vocabulary": ["SNOMED"], "code": ["13645005"]}),
    )
    _, by_id = first_occurrence(engine, [255573])
    pd.testing.assert_frame_equal(by_id, first)
    with pytest.raises(InputError, match="neither an OMOP concept id nor"):
        first_occurrence(engine, ["pneumonia"])

    out = outcome_from_events(engine, _index(), concepts=["SNOMED/13645005"], horizon_days=365)
    assert out["patient_id"].tolist() == _index()["patient_id"].tolist()
    p5 = out.set_index("patient_id").loc["p5"]
    assert bool(p5["event"]) and p5["time"] == 400 and not bool(p5["outcome"])
    survival = outcome_from_events(
        engine, _index(), concepts=["SNOMED/13645005"], horizon_days=None
    )
    assert bool(survival.set_index("patient_id").loc["p5", "outcome"])
    # p1: no event; censored at its last record (the CRP one day after the index).
    p1 = out.set_index("patient_id").loc["p1"]
    assert not bool(p1["event"]) and p1["time"] == 1

    with pytest.raises(InputError, match="death"):
        outcome_from_events(engine, _index(), death=True, horizon_days=30)
    engine.register("mw_death", pd.DataFrame({"patient_id": ["p1"], "death_date": [INDEX + D(20)]}))
    engine.register(
        "mw_observation",
        pd.DataFrame(
            {"patient_id": ["p2"], "start_date": [INDEX - D(900)], "end_date": [INDEX + D(700)]}
        ),
    )
    both = outcome_from_events(
        engine, _index(), concepts=["SNOMED/13645005"], death=True, horizon_days=30
    ).set_index("patient_id")
    assert both.loc["p1", "time"] == 20 and bool(both.loc["p1", "outcome"])
    assert both.loc["p2", "time"] == 700 and not bool(both.loc["p2", "event"])
    assert both.loc["p7", "time"] == 0 and not bool(both.loc["p7", "event"])


def test_bad_input() -> None:
    with pytest.raises(InputError, match="not valid"):
        SqlEngine.postgres("mysql://localhost/db")
    with pytest.raises(InputError, match="cannot connect to PostgreSQL") as err:
        SqlEngine.postgres("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(err.value) and "nobody:***@" in str(err.value)
    with SqlEngine.duckdb() as eng:
        with pytest.raises(InputError, match="mw_events"):
            _features(eng)
        eng.register("mw_events", _events())
        eng.register("mw_persons", _persons())
        with pytest.raises(InputError, match="'labs' is not one of"):
            _features(eng, domains=["labs"])
        dup = pd.concat([_index(), _index().iloc[:1]])
        with pytest.raises(InputError, match="'p1' appears more than once"):
            ehr_features(eng, index=dup, lookback_days=10, audit=Audit(), source="ehr")
        with pytest.raises(InputError, match="column 'code' is missing"):
            eng.register("mw_events", _events().drop(columns="code"))


# --- presence and value checks ----------------------------------------------------------


def test_presence_needs_a_person_row_and_a_record_in_the_window(engine: SqlEngine) -> None:
    # p7: a person row, no record; p8: records, no person row; p9: a person row and only
    # a record after the index date.
    late = ("p9", "condition", "SNOMED", "13645005", INDEX + D(3), None, None)
    p8 = [("p8", "condition", "SNOMED", "13645005", INDEX - D(d), None, None) for d in (1, 2)]
    engine.register("mw_events", pd.concat([_events(), _frame(_events(), [*p8, late])]))
    persons = pd.concat([_persons(), pd.DataFrame({"patient_id": ["p7", "p9"], "sex": ["F", "M"]})])
    engine.register("mw_persons", persons)
    index = pd.DataFrame({"patient_id": [f"p{i}" for i in range(1, 10)], "index_date": INDEX})
    audit = Audit()
    block = ehr_features(engine, index=index, lookback_days=LOOKBACK, audit=audit, source="e")
    assert block.present.tolist() == [True] * 6 + [False] * 3
    assert np.isnan(block.x[6:]).all()  # absent: no zero counts, no demographics
    src = audit.sources["e"]
    assert dict(src.patients_missing) == {"no_person_record": 1, "no_records_in_window": 2}
    assert src.patients == 6
    assert src.excluded["no_person_record"] == 2  # p8's records
    assert src.excluded["after_index"] == 3
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read == len(_events()) + 3
    # The sequences mark the same patients present.
    seq = ehr_sequences(engine, index=index, lookback_days=LOOKBACK, audit=Audit(), source="s")
    np.testing.assert_array_equal(seq.present, block.present)
    assert "p8" not in set(seq.events["patient_id"])


def _frame(like: pd.DataFrame, rows: list[tuple[object, ...]]) -> pd.DataFrame:
    columns = [*like.columns, "value_text"][: len(rows[0])]
    return pd.DataFrame(rows, columns=columns).astype(like.dtypes.to_dict() | {"unit": object})


def _with_bad_values(engine: SqlEngine) -> None:
    events = _events().assign(value_text=None)
    bad = [
        # p2: a value stored as text that is not a number, and an infinite one; p4: NaN.
        ("p2", "measurement", "LOINC", "1988-5", INDEX - D(2), None, "mg/L", "6.1%"),
        ("p2", "measurement", "LOINC", "1988-5", INDEX - D(1), np.inf, "mg/L", None),
        ("p4", "measurement", "LOINC", "1988-5", INDEX - D(1), np.nan, "mg/L", None),
        # Not checked: after the index date, and a patient outside the cohort.
        ("p2", "measurement", "LOINC", "1988-5", INDEX + D(1), None, "mg/L", "high"),
        ("zz", "measurement", "LOINC", "1988-5", INDEX, np.inf, "mg/L", None),
    ]
    frame = pd.concat([events, _frame(events, bad)], ignore_index=True)
    values = [None if pd.isna(v) else float(v) for v in frame["value"]]
    values[len(events) + 2] = float("nan")  # p4's NaN (pandas would make it NULL)
    table = pa.Table.from_pandas(frame.drop(columns="value"), preserve_index=False)
    engine.register("mw_events", table.append_column("value", pa.array(values, pa.float64())))
    engine.origins["measurement.value"] = "table labs.csv column crp"


def test_text_and_non_finite_values_raise_or_are_left_out(engine: SqlEngine) -> None:
    _with_bad_values(engine)
    with pytest.raises(InputError) as err:
        _features(engine)
    message = str(err.value)
    assert "table labs.csv column crp, patient 'p2', code LOINC/1988-5" in message
    assert "value '6.1%' is not a number" in message and "on_error: skip" in message
    f, audit, _ = _features(engine, on_error="skip")
    src = audit.sources["ehr"]
    assert src.excluded["value:not_a_number"] == 1
    assert src.excluded["value:non_finite"] == 2
    assert src.rows_used + sum(src.excluded.values()) == src.rows_read
    crp = "measurement:LOINC/1988-5"
    assert f.loc["p2", f"{crp}:count"] == 1 and f.loc["p2", f"{crp}:mean"] == 7.0
    assert f.loc["p4", f"{crp}:count"] == 0  # its only CRP was NaN: left out
    with pytest.raises(InputError, match=r"'6\.1%' is not a number"):
        ehr_sequences(engine, index=_index(), lookback_days=LOOKBACK, audit=Audit(), source="s")
    audit = Audit()
    seq = ehr_sequences(
        engine, index=_index(), lookback_days=LOOKBACK, audit=audit, source="s", on_error="skip"
    )
    assert np.isfinite(seq.events["value"].dropna()).all()
    assert audit.sources["s"].excluded["value:non_finite"] == 2


def test_ages_out_of_range_raise_or_are_left_missing(engine: SqlEngine) -> None:
    persons = _persons()
    persons.loc[0, "birth_date"] = INDEX + D(30)  # p1 born after the index date
    persons.loc[1, "year_of_birth"] = 3000  # p2
    persons.loc[2, "year_of_birth"] = 1880  # p3: 140 years old at the index date
    # p7 has no record: absent, its impossible year is never used and not checked.
    extra = pd.DataFrame({"patient_id": ["p7"], "year_of_birth": [0]})
    engine.register("mw_persons", pd.concat([persons, extra]))
    with pytest.raises(InputError) as err:
        _features(engine)
    assert "patient 'p2': year_of_birth 3000 is out of range" in str(err.value)
    f, audit, _ = _features(engine, on_error="skip")
    assert f.loc[["p1", "p2", "p3"], "age_at_index"].isna().all()
    assert f.loc["p1", "sex_male"] == 1.0  # the rest of the row stays
    excluded = audit.sources["ehr"].excluded
    assert excluded["year_of_birth:out_of_range"] == 1
    assert excluded["age_at_index:out_of_range"] == 2  # p1 and p3; p2 counted once
    src = audit.sources["ehr"]
    assert src.rows_used + sum(excluded.values()) == src.rows_read == len(_events()) + 3
    persons.loc[1, "year_of_birth"] = 1960
    persons.loc[2, "year_of_birth"] = None
    engine.register("mw_persons", persons)
    with pytest.raises(InputError, match=r"patient 'p1': age_at_index -0.08\d* is out of range"):
        _features(engine)
