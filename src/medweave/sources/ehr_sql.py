"""The EHR event model and its features, computed inside the database.

OMOP and FHIR readers both describe their records with the same two relations, visible
under these names in one SQL session (:class:`SqlEngine`), so that they produce identical
features:

``mw_events(patient_id VARCHAR, domain VARCHAR, vocabulary VARCHAR, code VARCHAR,
event_date DATE, value DOUBLE, unit VARCHAR[, value_text VARCHAR])``
    one row per record; ``domain`` is ``condition``, ``drug``, ``measurement`` or
    ``visit``; ``vocabulary`` / ``code`` are the standard vocabulary id and concept code
    (``LOINC`` / ``1988-5``, ``SNOMED`` / ``13645005``, ``RxNorm`` / ``8640``, ``Visit`` /
    ``IP``), or ``OMOP`` / the concept id as text when the vocabulary is not known.
    ``value_text`` (optional, NULL when left out) holds the value as stored when it is not
    a number (``'6.1%'`` in a text column); ``value`` is then NULL.
``mw_persons(patient_id VARCHAR, sex VARCHAR, year_of_birth INTEGER, birth_date DATE)``
    ``sex`` is ``M``, ``F`` or NULL; ``birth_date`` may be NULL.

Optional relations used by :func:`first_occurrence` and :func:`outcome_from_events`:
``mw_concepts(concept_id BIGINT, vocabulary VARCHAR, code VARCHAR)`` (resolves integer
OMOP concept ids), ``mw_death(patient_id VARCHAR, death_date DATE)`` and
``mw_observation(patient_id VARCHAR, start_date DATE, end_date DATE)``. A source that
knows why one of them is absent says so in :attr:`SqlEngine.unavailable`; its
:attr:`SqlEngine.origins` name where records come from in messages (per domain, ``person``
for ``mw_persons``, ``{domain}.value`` for the values).

:func:`ehr_features` registers the cohort as ``mw_index(patient_id VARCHAR, index_date
DATE)`` and computes every aggregate in SQL, written once in DuckDB's dialect and
transpiled with sqlglot for PostgreSQL. Only records dated in ``[index_date -
lookback_days, index_date]`` are used; the others are counted in the audit as
``after_index``, ``before_lookback``, ``unknown_patient`` (not linked to a cohort
patient), ``no_person_record`` (a cohort patient without a ``mw_persons`` row),
``missing_date`` or ``missing_code`` (no vocabulary or code), and records of codes seen
in fewer than ``min_patients`` cohort patients as ``rare_code``.

**Presence is evidence.** A cohort patient is present only with a ``mw_persons`` row and
at least one coded, dated record in the window (of a kept code or not); the others are
absent (their row is NaN) and counted in the audit's missing patients as
``no_person_record`` or ``no_records_in_window``.

**Value checks** (:data:`CHECKS`), found in SQL among the records and persons that would
be used: a value that is text but not a number, or not finite (inf, NaN); a year of birth
outside 1850 to this year; an age at the index date below 0 (birth after the index date)
or above 125. With ``on_error: raise`` the first is an :class:`InputError` naming the
database and table, the patient and the value; with ``skip`` such records are left out
and counted as ``value:not_a_number`` / ``value:non_finite``, and such ages are missing,
counted as ``year_of_birth:out_of_range`` / ``age_at_index:out_of_range``.

Features, one row per cohort patient (NaN where not applicable, and for absent patients):

* ``age_at_index``: years, ``(index_date - birth_date) / 365.25`` when the birth date is
  known, else ``year(index_date) - year_of_birth``; ``sex_male``: 1, 0 or NaN;
* per condition, drug and visit code: ``{domain}:{vocabulary}/{code}:count`` (records in
  the window, 0 when none) and ``...:days_since_last`` (NaN when none);
* per measurement code, also ``:last`` (value at the latest date; the largest value when
  several share that date), ``:mean``, ``:min``, ``:max`` and ``:slope_per_year`` (least
  squares slope of value on date, per 365.25 days; NaN with fewer than two distinct
  dates). ``:count`` counts records, with or without a value.

Codes are kept when at least ``min_patients`` cohort patients have them in their window
(no outcome is used, so the choice needs no cross-validation folds). Columns are the two
demographics, then the codes sorted by (domain, vocabulary, code), each with its
statistics in the order above.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._checks import Rule, ValueChecks, Violation
from medweave.sources._ehr_model import DOMAINS, Domain, domain_list, in_list, index_table
from medweave.sources._sql import (
    SCHEMAS,
    SqlEngine,
    quote_ident,
    quote_literal,
    redact_url,
    to_postgres,
)
from medweave.sources.ehr_outcomes import first_occurrence, open_engine, outcome_from_events

__all__ = [
    "CHECKS",
    "CODE_STATS",
    "DOMAINS",
    "MEASUREMENT_STATS",
    "SCHEMAS",
    "Domain",
    "SqlEngine",
    "audit_records",
    "check_demographics",
    "check_values",
    "ehr_features",
    "first_occurrence",
    "open_engine",
    "outcome_from_events",
    "quote_ident",
    "quote_literal",
    "record_status",
    "redact_url",
    "register_index",
    "to_postgres",
]

#: Statistics per code, in column order.
CODE_STATS: tuple[str, ...] = ("count", "days_since_last")
MEASUREMENT_STATS: tuple[str, ...] = (
    "count",
    "last",
    "mean",
    "min",
    "max",
    "slope_per_year",
    "days_since_last",
)
# Column of the long result holding each statistic.
_STAT_COLUMN = {
    "count": "n",
    "days_since_last": "days_since_last",
    "last": "v_last",
    "mean": "v_mean",
    "min": "v_min",
    "max": "v_max",
    "slope_per_year": "v_slope",
}
DEMOGRAPHICS: tuple[str, ...] = ("age_at_index", "sex_male")
EXCLUSION_REASONS: tuple[str, ...] = (
    "unknown_patient",
    "missing_date",
    "missing_code",
    "after_index",
    "before_lookback",
    "no_person_record",
)
_THIS_YEAR = dt.date.today().year
#: The event model's value checks (readers ``omop`` and ``fhir``; ``events`` checks its
#: values and dates in the file, see :mod:`medweave.sources.tables`).
CHECKS = ValueChecks(
    "omop",
    [
        Rule("value", "a finite number (a measurement value), or no value"),
        Rule(
            "year_of_birth",
            f"a year between 1850 and {_THIS_YEAR}",
            min=1850,
            max=_THIS_YEAR,
            integer=True,
        ),
        Rule(
            "age_at_index",
            "an age at the index date between 0 and 125 years (a birth on or before it)",
            min=0,
            max=125,
        ),
    ],
)
CHECKS.declare_for("fhir")
# Non-finite: NaN compares greater than every number in DuckDB and PostgreSQL alike.
_MAX_DOUBLE = "CAST(1.7976931348623157e308 AS DOUBLE)"
#: A record (``e``) whose value breaks the value rule (never NULL itself).
BAD_VALUE = (
    "((e.value IS NULL AND e.value_text IS NOT NULL) "
    f"OR COALESCE(ABS(e.value) > {_MAX_DOUBLE}, FALSE))"
)


# What the feature query returns, one kind of row each (column ``kind``).
_ROW_STATS, _ROW_CODE, _ROW_TOTAL, _ROW_PRESENT = 0, 1, 2, 3
# Status of a record (column ``status``): in the window, or the reason it is left out.
_STATUS = ("used", *EXCLUSION_REASONS)


def _events_joined(engine: SqlEngine, *, dates_only: bool = False) -> tuple[str, str]:
    """``FROM`` clause: every record (``e``) with its cohort patient (``i``) or NULLs; and
    the condition (SQL) that the cohort patient of a record has a person row.

    When the source offers keyed forms (``mw_patient_keys`` with ``mw_events_keyed``, or
    ``mw_event_dates`` when only domain and date are needed), records are matched to the
    cohort on the integer ``person_key`` of a person row (so the condition always holds);
    else on ``patient_id``, with ``mw_persons`` joined (alias ``pr``) to tell.
    """
    keyed = "mw_event_dates" if dates_only and engine.has("mw_event_dates") else "mw_events_keyed"
    if engine.has(keyed) and engine.has("mw_patient_keys"):
        return (
            f"{keyed} AS e LEFT JOIN ("
            "SELECT k.person_key, x.index_date, x.pos FROM mw_index AS x "
            "JOIN mw_patient_keys AS k ON x.patient_id = k.patient_id"
            ") AS i ON e.person_key = i.person_key",
            "TRUE",
        )
    return (
        "mw_events AS e LEFT JOIN mw_index AS i ON e.patient_id = i.patient_id "
        "LEFT JOIN (SELECT DISTINCT patient_id FROM mw_persons WHERE patient_id IS NOT NULL) "
        "AS pr ON e.patient_id = pr.patient_id",
        "pr.patient_id IS NOT NULL",
    )


def window_sql(*, domains: Sequence[str], lookback_days: int, has_person: str = "TRUE") -> str:
    """``WHERE`` conditions of the records that may be used: of a cohort patient with a
    person row, in one of ``domains``, dated in ``[index_date - lookback_days, index_date]``."""
    return f"""e.domain IN ({in_list(domains)})
    AND i.pos IS NOT NULL
    AND {has_person}
    AND e.event_date <= i.index_date
    AND e.event_date >= i.index_date - {int(lookback_days)}"""


def register_index(
    engine: SqlEngine, index: pd.DataFrame, *, source: str, lookback_days: int
) -> pa.Table:
    """Check the window and the event model, and register ``index`` as ``mw_index``."""
    if int(lookback_days) < 0:
        raise InputError(f"source {source!r}: lookback_days is {lookback_days}, expected >= 0")
    for name in ("mw_events", "mw_persons"):
        engine.require(name, purpose=f"read source {source!r}")
    idx = index_table(index)
    engine.register("mw_index", idx)
    return idx


def record_status(
    engine: SqlEngine,
    *,
    domains: Sequence[str],
    lookback_days: int,
    source: str,
    on_error: Literal["raise", "skip"],
) -> pd.DataFrame:
    """Records per ``domain`` and ``status`` (``used`` = in the window, or the reason they
    are left out), counted in the database; records of cohort patients with no date are an
    :class:`InputError` naming their table unless ``on_error`` is ``"skip"``."""
    joined, has_person = _events_joined(engine, dates_only=True)
    status = engine.execute(
        audit_sql(
            joined=joined, domains=domains, lookback_days=lookback_days, has_person=has_person
        )
    )
    counts = pd.DataFrame(
        {
            "domain": status.column("domain").to_pylist(),
            "status": [_STATUS[int(s)] for s in status.column("status").to_pylist()],
            "n": status.column("n").to_numpy().astype(np.int64),
        }
    )
    missing = counts[counts["status"] == "missing_date"].sort_values("domain")
    if len(missing) and on_error == "raise":
        domain = str(missing["domain"].iloc[0])
        where = engine.origins.get(domain, f"mw_events domain {domain!r}")
        raise InputError(
            f"{engine.label}: {int(missing['n'].iloc[0])} row(s) of {where} have no date "
            f"(patients in the cohort); fill in the dates or set on_error: skip in source "
            f"{source!r} to leave them out"
        )
    return counts


def audit_records(audit: Audit, source: str, counts: pd.DataFrame, *, missing_code: int) -> None:
    """Count the records read and those left out by reason (from :func:`record_status`);
    ``missing_code`` records in the window had no vocabulary or code."""
    audit.read(source, int(counts["n"].sum()))
    for reason in EXCLUSION_REASONS:
        if reason != "missing_code":
            rows = int(counts.loc[counts["status"] == reason, "n"].sum())
            audit.exclude_rows(source, reason, rows)
    audit.exclude_rows(source, "missing_code", missing_code)


def audit_sql(
    *, joined: str, domains: Sequence[str], lookback_days: int, has_person: str = "TRUE"
) -> str:
    """Records per domain and status: 0 in the window, else the exclusion reason's number."""
    return f"""
SELECT e.domain AS domain,
       CASE WHEN i.pos IS NULL THEN 1
            WHEN NOT ({has_person}) THEN {_STATUS.index("no_person_record")}
            WHEN e.event_date IS NULL THEN 2
            WHEN e.event_date > i.index_date THEN 4
            WHEN e.event_date < i.index_date - {int(lookback_days)} THEN 5
            ELSE 0 END AS status,
       COUNT(*) AS n
FROM {joined}
WHERE e.domain IN ({in_list(domains)})
GROUP BY 1, 2"""


def check_values(
    engine: SqlEngine,
    *,
    ids: Sequence[str],
    domains: Sequence[str],
    lookback_days: int,
    source: str,
    on_error: Literal["raise", "skip"],
    audit: Audit,
) -> None:
    """Find, in the database, the records in the window whose value is text that is not a
    number or is not finite, and report them through :data:`CHECKS` (an
    :class:`InputError` naming the table, patient, code and value, or counted as
    ``value:{problem}``; the feature and sequence queries leave them out by
    :data:`BAD_VALUE`). ``ids`` are the patients of ``mw_index``, by row."""
    joined, has_person = _events_joined(engine)
    window = window_sql(domains=domains, lookback_days=lookback_days, has_person=has_person)
    rows = engine.execute(
        f"""
SELECT problem, pos, domain, vocabulary, code, event_date, value, value_text, n
FROM (
  SELECT b.*,
         ROW_NUMBER() OVER (
           PARTITION BY problem ORDER BY pos, event_date, domain, vocabulary, code
         ) AS rn,
         COUNT(*) OVER (PARTITION BY problem) AS n
  FROM (
    SELECT CASE WHEN e.value IS NULL THEN 'not_a_number' ELSE 'non_finite' END AS problem,
           i.pos, e.domain, e.vocabulary, e.code, e.event_date, e.value, e.value_text
    FROM {joined}
    WHERE {window} AND {BAD_VALUE}
  ) AS b
) AS r
WHERE rn = 1"""
    ).to_pylist()
    rule = CHECKS.rule("value")
    violations, counts = [], {}
    # The first in the data first: by patient, then date.
    for row in sorted(rows, key=lambda r: (int(r["pos"]), r["event_date"], str(r["problem"]))):
        domain = str(row["domain"])
        origin = engine.origins.get(f"{domain}.value") or engine.origins.get(
            domain, f"mw_events domain {domain!r}"
        )
        where = (
            f"{engine.label} {origin}, patient {ids[int(row['pos'])]!r}, "
            f"code {row['vocabulary']}/{row['code']}"
        )
        problem = str(row["problem"])
        value = row["value_text"] if problem == "not_a_number" else row["value"]
        violations.append(Violation(rule, problem, where, value, "value"))
        counts[rule.audit_reason(problem)] = int(row["n"])
    CHECKS.report(violations, source=source, on_error=on_error, audit=audit, counts=counts)


def checked_records(
    engine: SqlEngine,
    *,
    index: pd.DataFrame,
    domains: Sequence[str],
    lookback_days: int,
    source: str,
    on_error: Literal["raise", "skip"],
    audit: Audit,
) -> tuple[list[str], pd.DataFrame]:
    """Where both forms of the EHR start: the cohort registered as ``mw_index``, what
    happens to each record counted (:func:`record_status`) and the values the window would
    use checked (:func:`check_values`). Returns the patient ids (the index's order) and
    the record counts."""
    idx = register_index(engine, index, source=source, lookback_days=lookback_days)
    ids = [str(v) for v in idx.column("patient_id").to_pylist()]
    counts = record_status(
        engine, domains=domains, lookback_days=lookback_days, source=source, on_error=on_error
    )
    check_values(
        engine,
        ids=ids,
        domains=domains,
        lookback_days=lookback_days,
        source=source,
        on_error=on_error,
        audit=audit,
    )
    return ids, counts


def check_demographics(
    engine: SqlEngine,
    *,
    ids: Sequence[str],
    year_of_birth: np.ndarray,
    age: np.ndarray,
    active: np.ndarray,
    source: str,
    on_error: Literal["raise", "skip"],
    audit: Audit,
) -> np.ndarray:
    """``age`` with the ages that break :data:`CHECKS` set to NaN (a year of birth out of
    range, else an age at the index date below 0 or above 125), checked where ``active``
    (present patients) and reported (an :class:`InputError` naming the person, or counted as
    ``year_of_birth:out_of_range`` / ``age_at_index:out_of_range``). ``ids`` name the rows."""
    origin = engine.origins.get("person", "mw_persons")

    def locate(i: int) -> str:
        return f"{engine.label} {origin}, patient {ids[i]!r}"

    _, year_ok = CHECKS.apply(
        {"year_of_birth": year_of_birth},
        source=source,
        on_error=on_error,
        audit=audit,
        locate=locate,
        active=active,
    )
    _, age_ok = CHECKS.apply(
        {"age_at_index": age},
        source=source,
        on_error=on_error,
        audit=audit,
        locate=locate,
        active=active & year_ok,
    )
    # The records are the source's rows; a person row whose age is left out is counted
    # as read too, so that rows read = used + excluded still holds.
    audit.read(source, int((~(year_ok & age_ok)).sum()))
    return np.where(year_ok & age_ok, age, np.nan)


def presence(
    audit: Audit, source: str, *, has_person: np.ndarray, has_record: np.ndarray
) -> np.ndarray:
    """Who is present (a person row and a usable record in the window); the others are
    counted as missing, ``no_person_record`` or ``no_records_in_window``."""
    present = has_person & has_record
    audit.missing(source, "no_person_record", int((~has_person).sum()))
    audit.missing(source, "no_records_in_window", int((has_person & ~has_record).sum()))
    return present


def person_rows(engine: SqlEngine, n_patients: int) -> np.ndarray:
    """Which rows of ``mw_index`` have a ``mw_persons`` row."""
    found = engine.execute(
        "SELECT DISTINCT i.pos FROM mw_index AS i "
        "JOIN mw_persons AS p ON i.patient_id = p.patient_id"
    )
    has = np.zeros(n_patients, dtype=bool)
    has[_ints(found.column("pos"))] = True
    return has


def features_sql(
    *,
    joined: str,
    domains: Sequence[str],
    lookback_days: int,
    min_patients: int,
    has_person: str = "TRUE",
) -> str:
    """The aggregates of :func:`ehr_features` in one query (DuckDB dialect).

    Records in the window (of cohort patients with a person row, with no bad value) are
    aggregated per (patient, code); ``pos`` is the patient's row in ``mw_index``. Returns
    four kinds of rows:

    * ``kind`` 0: the statistics of one patient (``pos``) and one kept code (``code_id``);
    * ``kind`` 1: the codes kept (seen in >= ``min_patients`` patients): ``code_id``,
      ``domain``, ``vocabulary``, ``code``;
    * ``kind`` 2: records in the window per ``domain``: ``status`` 0 with a code, 3
      without one (``n``);
    * ``kind`` 3: the patients (``pos``) with a coded record in the window (present).
    """
    text, integer, number = "CAST(NULL AS VARCHAR)", "CAST(NULL AS BIGINT)", "CAST(NULL AS DOUBLE)"
    no_stats = ", ".join([integer] * 2 + [number] * 5)
    window = window_sql(domains=domains, lookback_days=lookback_days, has_person=has_person)
    return f"""
WITH w AS (
  SELECT i.pos, e.domain, e.vocabulary, e.code, e.value,
         i.index_date - e.event_date AS days_before
  FROM {joined}
  WHERE {window}
    AND NOT {BAD_VALUE}
), per AS (
  SELECT pos, domain, vocabulary, code,
         COUNT(*) AS n,
         MIN(days_before) AS days_since_last,
         FIRST(value ORDER BY days_before ASC, value DESC)
           FILTER (WHERE value IS NOT NULL) AS v_last,
         AVG(value) AS v_mean,
         MIN(value) AS v_min,
         MAX(value) AS v_max,
         REGR_SLOPE(value, -CAST(days_before AS DOUBLE)) * 365.25 AS v_slope
  FROM w
  GROUP BY pos, domain, vocabulary, code
), keep AS (
  SELECT domain, vocabulary, code,
         ROW_NUMBER() OVER (ORDER BY domain, vocabulary, code) AS code_id
  FROM per
  WHERE vocabulary IS NOT NULL AND code IS NOT NULL
  GROUP BY domain, vocabulary, code
  HAVING COUNT(*) >= {int(min_patients)}
)
SELECT {_ROW_STATS} AS kind, per.pos, keep.code_id, CAST(NULL AS INTEGER) AS status,
       {text} AS domain, {text} AS vocabulary, {text} AS code,
       CAST(per.n AS BIGINT) AS n, CAST(per.days_since_last AS BIGINT) AS days_since_last,
       per.v_last, per.v_mean, per.v_min, per.v_max, per.v_slope
FROM per
JOIN keep ON per.domain = keep.domain AND per.vocabulary = keep.vocabulary
  AND per.code = keep.code
UNION ALL
SELECT {_ROW_CODE}, CAST(NULL AS INTEGER), code_id, CAST(NULL AS INTEGER), domain,
       vocabulary, code, {no_stats}
FROM keep
UNION ALL
SELECT {_ROW_TOTAL}, CAST(NULL AS INTEGER), {integer},
       CASE WHEN vocabulary IS NULL OR code IS NULL THEN 3 ELSE 0 END, domain, {text},
       {text}, CAST(SUM(n) AS BIGINT), {no_stats.split(", ", 1)[1]}
FROM per
GROUP BY 4, 5
UNION ALL
SELECT {_ROW_PRESENT}, pos, {integer}, CAST(NULL AS INTEGER), {text}, {text}, {text},
       {no_stats}
FROM per
WHERE vocabulary IS NOT NULL AND code IS NOT NULL
GROUP BY pos"""


DEMOGRAPHICS_SQL = """
SELECT i.pos,
       CASE WHEN p.birth_date IS NOT NULL
              THEN CAST(i.index_date - p.birth_date AS DOUBLE) / 365.25
            WHEN p.year_of_birth IS NOT NULL
              THEN CAST(EXTRACT(YEAR FROM i.index_date) - p.year_of_birth AS DOUBLE)
       END AS age_at_index,
       CAST(p.year_of_birth AS DOUBLE) AS year_of_birth,
       CASE WHEN p.sex = 'M' THEN 1.0 WHEN p.sex = 'F' THEN 0.0 END AS sex_male
FROM mw_index AS i
JOIN mw_persons AS p ON i.patient_id = p.patient_id"""


def ehr_features(
    engine: SqlEngine,
    *,
    index: pd.DataFrame,
    lookback_days: int,
    audit: Audit,
    source: str,
    domains: Iterable[str] = DOMAINS,
    min_patients: int = 5,
    on_error: Literal["raise", "skip"] = "raise",
) -> ModalityBlock:
    """Features of every cohort patient from ``mw_events`` / ``mw_persons`` (see module doc).

    ``index`` has ``patient_id`` and ``index_date``; the block holds one row per index
    patient (ids as str, in the index's order), kind ``tabular``, named ``source``, with
    ``present`` false (and a NaN row) for patients without a person row or without a
    record in the window. Records with no date, values and ages that break :data:`CHECKS`
    are an :class:`InputError` unless ``on_error`` is ``"skip"``, when they are counted
    (``missing_date``, ``value:...``; the ages are left missing).
    """
    doms = domain_list(domains)
    if int(min_patients) < 1:
        raise InputError(f"source {source!r}: min_patients is {min_patients}, expected >= 1")
    # 1. What happens to each record, per domain; the values checked.
    ids, counts = checked_records(
        engine,
        index=index,
        domains=doms,
        lookback_days=lookback_days,
        source=source,
        on_error=on_error,
        audit=audit,
    )
    joined, has_person = _events_joined(engine)

    # 2. The aggregates, pushed down.
    result = engine.execute(
        features_sql(
            joined=joined,
            domains=doms,
            lookback_days=lookback_days,
            min_patients=min_patients,
            has_person=has_person,
        )
    )
    kind = _ints(result.column("kind"))
    totals = result.take(pa.array(np.flatnonzero(kind == _ROW_TOTAL)))
    in_window = {0: 0, 3: 0}  # records in the window with a code (0) and without (3)
    for st, n in zip(
        totals.column("status").to_pylist(), totals.column("n").to_pylist(), strict=True
    ):
        in_window[int(st)] += int(n)
    x, names, used_rows = _pivot(result, n_patients=len(ids))
    has_record = np.zeros(len(ids), dtype=bool)
    has_record[_ints(result.column("pos"))[kind == _ROW_PRESENT]] = True

    # 3. Who is present, and their demographics.
    demo = engine.execute(DEMOGRAPHICS_SQL)
    pos = demo.column("pos").to_numpy().astype(np.int64)
    has_person_row = np.zeros(len(ids), dtype=bool)
    has_person_row[pos] = True
    present = presence(audit, source, has_person=has_person_row, has_record=has_record)
    x[pos, 0] = check_demographics(
        engine,
        ids=[ids[p] for p in pos],
        year_of_birth=_floats(demo.column("year_of_birth")),
        age=_floats(demo.column("age_at_index")),
        active=present[pos],
        source=source,
        on_error=on_error,
        audit=audit,
    )
    x[pos, 1] = _floats(demo.column("sex_male"))
    x[~present] = np.nan  # no data is not "no events": an absent row is never read

    audit_records(audit, source, counts, missing_code=in_window[3])
    audit.exclude_rows(source, "rare_code", in_window[0] - used_rows)
    audit.used(source, used_rows, patients=int(present.sum()))
    return ModalityBlock(
        name=source,
        kind="tabular",
        ids=ids,
        x=x,
        feature_names=names,
        present=present,
        meta={
            "lookback_days": int(lookback_days),
            "min_patients": int(min_patients),
            "domains": doms,
            "codes": sum(name.endswith(":count") for name in names),
            "engine": engine.dialect,
        },
    )


def _pivot(result: pa.Table, *, n_patients: int) -> tuple[np.ndarray, list[str], int]:
    """The rows of :func:`features_sql` to the wide float32 matrix, demographics first.

    Returns the matrix, the feature names and the records used.
    """
    kind = _ints(result.column("kind"))
    code_rows = result.take(pa.array(np.flatnonzero(kind == _ROW_CODE)))
    code_ids = _ints(code_rows.column("code_id"))
    triples = list(
        zip(
            code_rows.column("domain").to_pylist(),
            code_rows.column("vocabulary").to_pylist(),
            code_rows.column("code").to_pylist(),
            strict=True,
        )
    )
    # Columns: codes sorted by their strings here (database collations differ).
    order = sorted(range(len(triples)), key=lambda k: triples[k])
    codes = [triples[k] for k in order]
    stats_of = [MEASUREMENT_STATS if d == "measurement" else CODE_STATS for d, _, _ in codes]
    width = np.array([len(st) for st in stats_of], dtype=np.int64)
    offset = len(DEMOGRAPHICS) + np.concatenate([[0], np.cumsum(width)[:-1]]).astype(np.int64)
    names = list(DEMOGRAPHICS)
    for (domain, vocab, code), st in zip(codes, stats_of, strict=True):
        names.extend(f"{domain}:{vocab}/{code}:{s}" for s in st)
    # Database code id -> first column of that code; whether it is a measurement.
    size = int(code_ids.max()) + 1 if len(code_ids) else 1
    first_col = np.zeros(size, dtype=np.int64)
    is_meas_of = np.zeros(size, dtype=bool)
    for rank, k in enumerate(order):
        first_col[code_ids[k]] = offset[rank]
        is_meas_of[code_ids[k]] = codes[rank][0] == "measurement"

    x = np.full((n_patients, len(names)), np.nan, dtype=np.float32)
    if len(codes):
        x[:, offset] = 0.0  # :count is 0 when the patient has no record of the code
    stat_rows = kind == _ROW_STATS
    row = _ints(result.column("pos"))[stat_rows]
    cid = _ints(result.column("code_id"))[stat_rows]
    start = row * len(names) + first_col[cid]  # flat position of each row's first column
    is_meas = is_meas_of[cid]
    meas_start = start[is_meas]
    flat = x.reshape(-1)
    for stat in MEASUREMENT_STATS:
        values = _floats(result.column(_STAT_COLUMN[stat]))[stat_rows]
        if stat in CODE_STATS:
            j = np.where(is_meas, MEASUREMENT_STATS.index(stat), CODE_STATS.index(stat))
            flat[start + j] = values
        else:
            flat[meas_start + MEASUREMENT_STATS.index(stat)] = values[is_meas]
    used_rows = int(_ints(result.column("n"))[stat_rows].sum())
    return x, names, used_rows


def _ints(values: pa.ChunkedArray) -> np.ndarray:
    """An integer Arrow column as int64, nulls as 0."""
    out: np.ndarray = pc.fill_null(values, 0).to_numpy()
    return out.astype(np.int64, copy=False)


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as float64 with NaN for nulls."""
    out: np.ndarray = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return out.astype(np.float64, copy=False)
