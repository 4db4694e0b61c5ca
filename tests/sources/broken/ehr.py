"""Broken inputs of the ``omop`` reader: small OMOP CDM files in DuckDB, each broken one way.

:func:`write_cdm` writes a valid CDM for the harness's patients ``P1`` … ``P6`` (person ids
1 … 6, records in the window before the index date 2020-06-30 and one after it) and then
runs the SQL that breaks it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from medweave.testing.readers import BrokenInput

#: The tables of the valid CDM (value_as_number is DOUBLE; a case may make it text).
CDM_SQL = """
CREATE TABLE person (person_id BIGINT, gender_concept_id INTEGER, year_of_birth INTEGER,
                     person_source_value VARCHAR);
INSERT INTO person SELECT i, CASE WHEN i % 2 = 0 THEN 8532 ELSE 8507 END, 1950 + i, 'P' || i
FROM range(1, 7) AS t(i);
CREATE TABLE condition_occurrence (condition_occurrence_id BIGINT, person_id BIGINT,
                                   condition_concept_id INTEGER, condition_start_date DATE);
INSERT INTO condition_occurrence SELECT i, i, 255573, DATE '2020-05-01' FROM range(1, 7) t(i);
INSERT INTO condition_occurrence SELECT 10 + i, i, 255573, DATE '2021-01-01'
FROM range(1, 7) t(i);
CREATE TABLE drug_exposure (drug_exposure_id BIGINT, person_id BIGINT, drug_concept_id INTEGER,
                            drug_exposure_start_date DATE);
INSERT INTO drug_exposure SELECT i, i, 1118084, DATE '2020-04-01' FROM range(1, 7) t(i);
CREATE TABLE measurement (measurement_id BIGINT, person_id BIGINT,
                          measurement_concept_id INTEGER, measurement_date DATE,
                          value_as_number DOUBLE, unit_source_value VARCHAR);
INSERT INTO measurement SELECT i, i, 3020460, DATE '2020-06-01', 1.5 * i, 'mg/L'
FROM range(1, 7) t(i);
CREATE TABLE visit_occurrence (visit_occurrence_id BIGINT, person_id BIGINT,
                               visit_concept_id INTEGER, visit_start_date DATE);
INSERT INTO visit_occurrence SELECT i, i, 9201, DATE '2020-05-01' FROM range(1, 7) t(i);
"""
#: Every domain table of the CDM (to take a patient's records out of all of them).
DOMAIN_TABLES = ("condition_occurrence", "drug_exposure", "measurement", "visit_occurrence")


def write_cdm(path: Path, sql: str = "") -> Path:
    """The valid CDM at ``path`` (a DuckDB file), then ``sql`` run on it to break it."""
    con = duckdb.connect(str(path))
    try:
        con.execute(CDM_SQL)
        if sql:
            con.execute(sql)
    finally:
        con.close()
    return path


def _cdm(sql: str, **entry: Any) -> Callable[[Path], dict[str, Any]]:
    def write(folder: Path) -> dict[str, Any]:
        write_cdm(folder / "omop.duckdb", sql)
        return {"type": "omop", "database": "omop.duckdb", **entry}

    return write


def _not_a_database(folder: Path) -> dict[str, Any]:
    (folder / "omop.duckdb").write_text("patient_id,value\nP1,1\n")
    return {"type": "omop", "database": "omop.duckdb"}


_NO_RECORDS_OF_P6 = ";".join(f"DELETE FROM {t} WHERE person_id = 6" for t in DOMAIN_TABLES)
_TEXT_VALUES = (
    "ALTER TABLE measurement ALTER value_as_number TYPE VARCHAR;"
    "UPDATE measurement SET value_as_number = '6.1%' WHERE person_id = 4"
)

CASES: list[BrokenInput] = [
    BrokenInput(
        "omop: no person table",
        "omop",
        _cdm("DROP TABLE person"),
        names=("omop.duckdb", "table 'person' not found"),
    ),
    BrokenInput(
        "omop: a domain table missing",
        "omop",
        _cdm("DROP TABLE visit_occurrence"),
        names=("omop.duckdb", "'visit_occurrence' not found", "domains"),
    ),
    BrokenInput(
        "omop: person table without person_source_value",
        "omop",
        _cdm("ALTER TABLE person DROP COLUMN person_source_value"),
        names=("omop.duckdb", "'person'", "'person_source_value'", "id_column"),
    ),
    BrokenInput(
        "omop: text in a VARCHAR value_as_number",
        "omop",
        _cdm(_TEXT_VALUES),
        names=("omop.duckdb", "table measurement column value_as_number", "'P4'", "'6.1%'"),
        skip_reason="value:not_a_number",
    ),
    BrokenInput(
        "omop: an infinite value",
        "omop",
        _cdm("UPDATE measurement SET value_as_number = 'inf' WHERE person_id = 4"),
        names=("omop.duckdb", "value_as_number", "'P4'", "inf", "not finite"),
        skip_reason="value:non_finite",
    ),
    BrokenInput(
        "omop: a birth after the index date",
        "omop",
        _cdm("UPDATE person SET year_of_birth = 2021 WHERE person_id = 3"),
        names=("omop.duckdb", "table person", "'P3'", "age_at_index -1"),
        skip_reason="age_at_index:out_of_range",
    ),
    BrokenInput(
        "omop: year_of_birth 0",
        "omop",
        _cdm("UPDATE person SET year_of_birth = 0 WHERE person_id = 3"),
        names=("omop.duckdb", "table person", "'P3'", "year_of_birth 0"),
        skip_reason="year_of_birth:out_of_range",
    ),
    BrokenInput(
        "omop: year_of_birth 3000",
        "omop",
        _cdm("UPDATE person SET year_of_birth = 3000 WHERE person_id = 5"),
        names=("omop.duckdb", "table person", "'P5'", "year_of_birth 3000"),
        skip_reason="year_of_birth:out_of_range",
    ),
    BrokenInput(
        "omop: a person without any record",
        "omop",
        _cdm(_NO_RECORDS_OF_P6),
        names=(),
        skip_reason="no_records_in_window",
        audited=True,
    ),
    BrokenInput(
        "omop: records of a patient without a person row",
        "omop",
        _cdm("DELETE FROM person WHERE person_id = 6"),
        names=(),
        skip_reason="no_person_record",
        audited=True,
    ),
    BrokenInput(
        "omop: records without a date",
        "omop",
        _cdm("UPDATE drug_exposure SET drug_exposure_start_date = NULL WHERE person_id = 2"),
        names=("omop.duckdb", "1 row(s) of table drug_exposure", "no date"),
        skip_reason="missing_date",
    ),
    BrokenInput(
        "omop: a person_source_value held by two persons",
        "omop",
        _cdm("UPDATE person SET person_source_value = 'P1' WHERE person_id = 2"),
        names=("omop.duckdb", "person_source_value 'P1'", "2 rows", "id_column: person_id"),
    ),
    BrokenInput(
        "omop: a file that is not a DuckDB database",
        "omop",
        _not_a_database,
        names=("omop.duckdb", "cannot open it read-only as a DuckDB database"),
    ),
    BrokenInput(
        "omop: a value only after the index date is not checked, a text one before is",
        "omop",
        _cdm(
            _TEXT_VALUES + ";UPDATE measurement SET value_as_number = 'high', "
            "measurement_date = DATE '2020-07-01' WHERE person_id = 2"
        ),
        names=("'P4'", "'6.1%'"),
        skip_reason="value:not_a_number",
    ),
]
