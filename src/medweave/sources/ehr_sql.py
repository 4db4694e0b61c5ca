"""The EHR event model and its features, computed inside the database.

OMOP and FHIR readers both describe their records with the same two relations, visible
under these names in one SQL session (:class:`SqlEngine`), so that they produce identical
features:

``mw_events(patient_id VARCHAR, domain VARCHAR, vocabulary VARCHAR, code VARCHAR,
event_date DATE, value DOUBLE, unit VARCHAR)``
    one row per record; ``domain`` is ``condition``, ``drug``, ``measurement`` or
    ``visit``; ``vocabulary`` / ``code`` are the standard vocabulary id and concept code
    (``LOINC`` / ``1988-5``, ``SNOMED`` / ``13645005``, ``RxNorm`` / ``8640``, ``Visit`` /
    ``IP``), or ``OMOP`` / the concept id as text when the vocabulary is not known.
``mw_persons(patient_id VARCHAR, sex VARCHAR, year_of_birth INTEGER, birth_date DATE)``
    ``sex`` is ``M``, ``F`` or NULL; ``birth_date`` may be NULL.

Optional relations used by :func:`first_occurrence` and :func:`outcome_from_events`:
``mw_concepts(concept_id BIGINT, vocabulary VARCHAR, code VARCHAR)`` (resolves integer
OMOP concept ids), ``mw_death(patient_id VARCHAR, death_date DATE)`` and
``mw_observation(patient_id VARCHAR, start_date DATE, end_date DATE)``. A source that
knows why one of them is absent says so in :attr:`SqlEngine.unavailable`.

:func:`ehr_features` registers the cohort as ``mw_index(patient_id VARCHAR, index_date
DATE)`` and computes every aggregate in SQL, written once in DuckDB's dialect and
transpiled with sqlglot for PostgreSQL. Only records dated in ``[index_date -
lookback_days, index_date]`` are used; the others are counted in the audit as
``after_index``, ``before_lookback``, ``unknown_patient`` (not in the cohort),
``missing_date`` or ``missing_code`` (no vocabulary or code), and records of codes seen
in fewer than ``min_patients`` cohort patients as ``rare_code``.

Features, one row per cohort patient (NaN where not applicable):

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

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError

__all__ = [
    "CODE_STATS",
    "DOMAINS",
    "MEASUREMENT_STATS",
    "SCHEMAS",
    "Domain",
    "SqlEngine",
    "audit_records",
    "ehr_features",
    "first_occurrence",
    "open_engine",
    "outcome_from_events",
    "quote_ident",
    "record_status",
    "register_index",
    "to_postgres",
]

Domain = Literal["condition", "drug", "measurement", "visit"]
DOMAINS: tuple[Domain, ...] = get_args(Domain)
Dialect = Literal["duckdb", "postgres"]

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
#: Column types of the event-model relations; :meth:`SqlEngine.register` casts to them.
SCHEMAS: dict[str, pa.Schema] = {
    "mw_events": pa.schema(
        [
            ("patient_id", pa.string()),
            ("domain", pa.string()),
            ("vocabulary", pa.string()),
            ("code", pa.string()),
            ("event_date", pa.date32()),
            ("value", pa.float64()),
            ("unit", pa.string()),
        ]
    ),
    "mw_persons": pa.schema(
        [
            ("patient_id", pa.string()),
            ("sex", pa.string()),
            ("year_of_birth", pa.int32()),
            ("birth_date", pa.date32()),
        ]
    ),
    "mw_concepts": pa.schema(
        [("concept_id", pa.int64()), ("vocabulary", pa.string()), ("code", pa.string())]
    ),
    "mw_death": pa.schema([("patient_id", pa.string()), ("death_date", pa.date32())]),
    "mw_observation": pa.schema(
        [("patient_id", pa.string()), ("start_date", pa.date32()), ("end_date", pa.date32())]
    ),
}
EXCLUSION_REASONS: tuple[str, ...] = (
    "unknown_patient",
    "missing_date",
    "missing_code",
    "after_index",
    "before_lookback",
)


# --------------------------------------------------------------------------------------
# SQL dialects
# --------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (valid in DuckDB and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _pg_rewrite(node: exp.Expression) -> exp.Expression:
    """What plain transpiling gets wrong for PostgreSQL.

    ``FIRST(x ORDER BY ...) [FILTER (WHERE ...)]`` (a DuckDB aggregate) becomes
    ``(ARRAY_AGG(x ORDER BY ...) [FILTER (WHERE ...)])[1]``, and ``MAKE_DATE`` stays
    ``MAKE_DATE`` (sqlglot writes Snowflake's ``DATE_FROM_PARTS``).
    """
    if isinstance(node, exp.Filter) and _is_ordered_first(node.this):
        agg = exp.ArrayAgg(this=node.this.this.copy())
        filtered = exp.Filter(this=agg, expression=node.expression.copy())
        return exp.Bracket(this=exp.Paren(this=filtered), expressions=[exp.Literal.number(0)])
    if _is_ordered_first(node) and not isinstance(node.parent, exp.Filter):
        agg = exp.ArrayAgg(this=node.this.copy())
        return exp.Bracket(this=exp.Paren(this=agg), expressions=[exp.Literal.number(0)])
    if isinstance(node, exp.DateFromParts):
        args = [node.args[k].copy() for k in ("year", "month", "day")]
        return exp.Anonymous(this="MAKE_DATE", expressions=args)
    return node


def _is_ordered_first(node: exp.Expression) -> bool:
    return isinstance(node, exp.First) and isinstance(node.this, exp.Order)


def to_postgres(sql: str) -> str:
    """Transpile DuckDB SQL (one or more statements) to PostgreSQL with sqlglot."""
    out = []
    for tree in sqlglot.parse(sql, read="duckdb"):
        if tree is None:
            continue
        out.append(tree.transform(_pg_rewrite).sql(dialect="postgres"))
    return ";\n".join(out)


# --------------------------------------------------------------------------------------
# The SQL session
# --------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class SqlEngine:
    """One SQL session, on DuckDB (in-process) or PostgreSQL (ADBC), holding the event model.

    SQL handed to :meth:`execute` and :meth:`run` is in DuckDB's dialect and is transpiled
    for PostgreSQL. Relations made with :meth:`register` and :meth:`create_view` are
    temporary: they live as long as the session and never touch the user's database.
    """

    def __init__(self, con: Any, *, dialect: Dialect, label: str) -> None:
        self.con = con
        self.dialect: Dialect = dialect
        self.label = label
        #: Where each domain's records come from (for messages), e.g. ``table measurement``.
        self.origins: dict[str, str] = {}
        #: Optional relations (``mw_death``, ...) that could not be built, and why.
        self.unavailable: dict[str, str] = {}
        self._relations: set[str] = set()
        self._data: dict[str, pa.Table] = {}

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def duckdb(cls, *, label: str = "DuckDB session", threads: int | None = None) -> SqlEngine:
        """An in-memory DuckDB session (attach database files with :meth:`attach_duckdb`)."""
        import duckdb

        con = duckdb.connect()
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        return cls(con, dialect="duckdb", label=label)

    @classmethod
    def wrap_duckdb(cls, con: Any, *, label: str = "DuckDB session") -> SqlEngine:
        """A session on an existing DuckDB connection (the caller keeps ownership)."""
        engine = cls(con, dialect="duckdb", label=label)
        engine._owned = False
        return engine

    @classmethod
    def postgres(cls, url: str, *, label: str | None = None) -> SqlEngine:
        """A PostgreSQL session over ADBC; ``url`` is ``postgresql://user@host:port/db``."""
        shown = redact_url(url)
        scheme = urlsplit(url).scheme if "://" in url else ""
        if scheme not in ("postgresql", "postgres"):
            raise InputError(
                f"PostgreSQL URL {shown!r} is not valid: expected "
                "'postgresql://user[:password]@host[:port]/database'"
            )
        try:
            import adbc_driver_postgresql.dbapi as pg

            con = pg.connect(url, autocommit=True)
        except Exception as err:  # the driver's errors carry no stable type
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"cannot connect to PostgreSQL at {shown!r}: {reason}; check the host, port, "
                "database name and credentials in the URL"
            ) from err
        return cls(con, dialect="postgres", label=label or shown)

    def attach_duckdb(self, path: str, *, alias: str) -> None:
        """Attach a DuckDB database file read-only under ``alias`` (never modifies it)."""
        if self.dialect != "duckdb":
            raise TypeError("attach_duckdb needs a DuckDB session")
        self.con.execute(f"ATTACH {quote_literal(path)} AS {quote_ident(alias)} (READ_ONLY)")

    # -- running SQL --------------------------------------------------------------------
    def translate(self, sql: str) -> str:
        """``sql`` (DuckDB dialect) as this session's dialect."""
        return sql if self.dialect == "duckdb" else to_postgres(sql)

    def execute(self, sql: str) -> pa.Table:
        """Run one query (DuckDB dialect) and return its result as an Arrow table."""
        text = self.translate(sql)
        if self.dialect == "duckdb":
            rel = self.con.sql(text)
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
            return cast(pa.Table, fetch())
        cur = self.con.cursor()
        try:
            cur.execute(text)
            return cast(pa.Table, cur.fetch_arrow_table())
        finally:
            cur.close()

    def run(self, sql: str) -> None:
        """Run statements that return nothing (DuckDB dialect)."""
        text = self.translate(sql)
        if self.dialect == "duckdb":
            self.con.execute(text)
            return
        cur = self.con.cursor()
        try:
            cur.execute(text)
        finally:
            cur.close()

    def register(self, name: str, data: pd.DataFrame | pa.Table) -> None:
        """Make ``data`` visible as the temporary relation ``name`` (replacing it)."""
        table = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        if name in SCHEMAS:
            table = _conform(table, SCHEMAS[name], name=name)
        if self.dialect == "duckdb":
            if name in self._data:
                self.con.unregister(name)
            self.con.register(name, table)
            self._data[name] = table
        else:
            cur = self.con.cursor()
            try:
                cur.adbc_ingest(name, table, mode="replace", temporary=True)
            finally:
                cur.close()
        self._relations.add(name)

    def create_view(self, name: str, select: str) -> None:
        """A temporary view ``name`` over ``select`` (DuckDB dialect)."""
        self.run(f"CREATE OR REPLACE TEMPORARY VIEW {quote_ident(name)} AS {select}")
        self._relations.add(name)

    def has(self, name: str) -> bool:
        """Whether the relation ``name`` was registered or created in this session."""
        return name in self._relations

    def require(self, name: str, *, purpose: str) -> None:
        """Raise :class:`InputError` if ``name`` is not available, saying why."""
        if self.has(name):
            return
        why = self.unavailable.get(name, f"no relation {name} was provided")
        raise InputError(f"{self.label}: cannot {purpose}: {why}")

    # -- closing ------------------------------------------------------------------------
    _owned = True

    def close(self) -> None:
        if self._owned:
            self.con.close()

    def __enter__(self) -> SqlEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _conform(table: pa.Table, schema: pa.Schema, *, name: str) -> pa.Table:
    """``table`` with the columns and types of the relation ``name`` (NULL-typed columns,
    datetimes and numbers in other widths are cast; a missing column is an error)."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise InputError(
                f"{name}: column {field.name!r} is missing; expected the columns "
                f"{', '.join(schema.names)}"
            )
        col = table.column(field.name)
        if col.type != field.type:
            if pa.types.is_timestamp(col.type) and col.type.tz is not None:
                col = pc.cast(col, pa.timestamp(col.type.unit))
            try:
                col = pc.cast(col, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise InputError(
                    f"{name}: column {field.name!r} has type {col.type}, expected {field.type}"
                ) from err
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


def _index_table(index: pd.DataFrame) -> pa.Table:
    """The cohort index as Arrow (patient_id string, index_date date32, pos int32)."""
    missing = [c for c in ("patient_id", "index_date") if c not in index.columns]
    if missing:
        raise InputError(
            f"cohort index: missing column(s) {', '.join(missing)}; expected patient_id and "
            "index_date"
        )
    if index["patient_id"].isna().any():
        raise InputError("cohort index: a patient_id is empty; every patient needs an id")
    ids = index["patient_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"cohort index: patient_id {dup.iloc[0]!r} appears more than once")
    dates = pd.to_datetime(index["index_date"])
    if dates.isna().any():
        bad = ids[dates.isna().to_numpy()].iloc[0]
        raise InputError(f"cohort index: patient {bad!r} has no index_date")
    if dates.dt.tz is not None:
        dates = dates.dt.tz_localize(None)
    days = dates.to_numpy().astype("datetime64[D]")
    return pa.table(
        {
            "patient_id": pa.array(ids.to_numpy(dtype=object), type=pa.string()),
            "index_date": pa.array(days, type=pa.date32()),
            # Row of each patient in the block: the aggregation groups on it, not on text.
            "pos": pa.array(np.arange(len(ids), dtype=np.int32), type=pa.int32()),
        }
    )


def _domain_list(domains: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(domains))
    bad = [d for d in out if d not in DOMAINS]
    if bad:
        raise InputError(f"EHR domains: {bad[0]!r} is not one of {', '.join(DOMAINS)}")
    if not out:
        raise InputError(f"EHR domains: none given; use some of {', '.join(DOMAINS)}")
    return out


def _in_list(values: Sequence[str]) -> str:
    return ", ".join(quote_literal(v) for v in values)


# What the feature query returns, one kind of row each (column ``kind``).
_ROW_STATS, _ROW_CODE, _ROW_TOTAL = 0, 1, 2
# Status of a record (column ``status``): in the window, or the reason it is left out.
_STATUS = ("used", *EXCLUSION_REASONS)


def _events_joined(engine: SqlEngine, *, dates_only: bool = False) -> str:
    """``FROM`` clause: every record (``e``) with its cohort patient (``i``) or NULLs.

    When the source offers keyed forms (``mw_patient_keys`` with ``mw_events_keyed``, or
    ``mw_event_dates`` when only domain and date are needed), records are matched to the
    cohort on an integer ``person_key``; else on ``patient_id``.
    """
    keyed = "mw_event_dates" if dates_only and engine.has("mw_event_dates") else "mw_events_keyed"
    if engine.has(keyed) and engine.has("mw_patient_keys"):
        return (
            f"{keyed} AS e LEFT JOIN ("
            "SELECT k.person_key, x.index_date, x.pos FROM mw_index AS x "
            "JOIN mw_patient_keys AS k ON x.patient_id = k.patient_id"
            ") AS i ON e.person_key = i.person_key"
        )
    return "mw_events AS e LEFT JOIN mw_index AS i ON e.patient_id = i.patient_id"


def register_index(
    engine: SqlEngine, index: pd.DataFrame, *, source: str, lookback_days: int
) -> pa.Table:
    """Check the window and the event model, and register ``index`` as ``mw_index``."""
    if int(lookback_days) < 0:
        raise InputError(f"source {source!r}: lookback_days is {lookback_days}, expected >= 0")
    for name in ("mw_events", "mw_persons"):
        engine.require(name, purpose=f"read source {source!r}")
    idx = _index_table(index)
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
    status = engine.execute(
        audit_sql(
            joined=_events_joined(engine, dates_only=True),
            domains=domains,
            lookback_days=lookback_days,
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


def audit_sql(*, joined: str, domains: Sequence[str], lookback_days: int) -> str:
    """Records per domain and status: 0 in the window, else the exclusion reason's number."""
    return f"""
SELECT e.domain AS domain,
       CASE WHEN i.pos IS NULL THEN 1
            WHEN e.event_date IS NULL THEN 2
            WHEN e.event_date > i.index_date THEN 4
            WHEN e.event_date < i.index_date - {int(lookback_days)} THEN 5
            ELSE 0 END AS status,
       COUNT(*) AS n
FROM {joined}
WHERE e.domain IN ({_in_list(domains)})
GROUP BY 1, 2"""


def features_sql(
    *, joined: str, domains: Sequence[str], lookback_days: int, min_patients: int
) -> str:
    """The aggregates of :func:`ehr_features` in one query (DuckDB dialect).

    Records in the window are aggregated per (patient, code); ``pos`` is the patient's row
    in ``mw_index``. Returns three kinds of rows:

    * ``kind`` 0: the statistics of one patient (``pos``) and one kept code (``code_id``);
    * ``kind`` 1: the codes kept (seen in >= ``min_patients`` patients): ``code_id``,
      ``domain``, ``vocabulary``, ``code``;
    * ``kind`` 2: records in the window per ``domain``: ``status`` 0 with a code, 3
      without one (``n``).
    """
    text, integer, number = "CAST(NULL AS VARCHAR)", "CAST(NULL AS BIGINT)", "CAST(NULL AS DOUBLE)"
    no_stats = ", ".join([integer] * 2 + [number] * 5)
    return f"""
WITH w AS (
  SELECT i.pos, e.domain, e.vocabulary, e.code, e.value,
         i.index_date - e.event_date AS days_before
  FROM {joined}
  WHERE e.domain IN ({_in_list(domains)})
    AND i.pos IS NOT NULL
    AND e.event_date <= i.index_date
    AND e.event_date >= i.index_date - {int(lookback_days)}
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
GROUP BY 4, 5"""


DEMOGRAPHICS_SQL = """
SELECT i.pos,
       CASE WHEN p.birth_date IS NOT NULL
              THEN CAST(i.index_date - p.birth_date AS DOUBLE) / 365.25
            WHEN p.year_of_birth IS NOT NULL
              THEN CAST(EXTRACT(YEAR FROM i.index_date) - p.year_of_birth AS DOUBLE)
       END AS age_at_index,
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
    patient (ids as str, in the index's order), kind ``tabular``, named ``source``.
    Records with no date are an :class:`InputError` naming their table unless
    ``on_error`` is ``"skip"``, when they are counted as ``missing_date``.
    """
    doms = _domain_list(domains)
    if int(min_patients) < 1:
        raise InputError(f"source {source!r}: min_patients is {min_patients}, expected >= 1")
    idx = register_index(engine, index, source=source, lookback_days=lookback_days)
    joined = _events_joined(engine)

    # 1. What happens to each record, per domain.
    counts = record_status(
        engine, domains=doms, lookback_days=lookback_days, source=source, on_error=on_error
    )

    # 2. The aggregates, pushed down.
    result = engine.execute(
        features_sql(
            joined=joined, domains=doms, lookback_days=lookback_days, min_patients=min_patients
        )
    )
    totals = result.take(pa.array(np.flatnonzero(_ints(result.column("kind")) == _ROW_TOTAL)))
    in_window = {0: 0, 3: 0}  # records in the window with a code (0) and without (3)
    for st, n in zip(
        totals.column("status").to_pylist(), totals.column("n").to_pylist(), strict=True
    ):
        in_window[int(st)] += int(n)
    x, names, used_rows, with_events = _pivot(result, n_patients=idx.num_rows)
    demo = engine.execute(DEMOGRAPHICS_SQL)
    pos = demo.column("pos").to_numpy().astype(np.int64)
    x[pos, 0] = _floats(demo.column("age_at_index"))
    x[pos, 1] = _floats(demo.column("sex_male"))
    found = with_events.copy()
    found[pos] = True

    audit_records(audit, source, counts, missing_code=in_window[3])
    audit.exclude_rows(source, "rare_code", in_window[0] - used_rows)
    audit.used(source, used_rows, patients=int(found.sum()))
    return ModalityBlock(
        name=source,
        kind="tabular",
        ids=[str(v) for v in idx.column("patient_id").to_pylist()],
        x=x,
        feature_names=names,
        meta={
            "lookback_days": int(lookback_days),
            "min_patients": int(min_patients),
            "domains": doms,
            "codes": sum(name.endswith(":count") for name in names),
            "engine": engine.dialect,
        },
    )


def _pivot(result: pa.Table, *, n_patients: int) -> tuple[np.ndarray, list[str], int, np.ndarray]:
    """The rows of :func:`features_sql` to the wide float32 matrix, demographics first.

    Returns the matrix, the feature names, the records used, and which patients had any.
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
    with_events = np.zeros(n_patients, dtype=bool)
    with_events[row] = True
    return x, names, used_rows, with_events


def _ints(values: pa.ChunkedArray) -> np.ndarray:
    """An integer Arrow column as int64, nulls as 0."""
    out: np.ndarray = pc.fill_null(values, 0).to_numpy()
    return out.astype(np.int64, copy=False)


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as float64 with NaN for nulls."""
    out: np.ndarray = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return out.astype(np.float64, copy=False)


# --------------------------------------------------------------------------------------
# Index dates and outcomes from events
# --------------------------------------------------------------------------------------

_CODE_RE = re.compile(r"^(?P<vocab>[^/]+)/(?P<code>.+)$")


def _concept_set(engine: SqlEngine, concepts: Sequence[int | str], *, what: str) -> pa.Table:
    """``concepts`` (OMOP concept ids or 'VOCABULARY/CODE') as (vocabulary, code) rows."""
    if isinstance(concepts, str | int) or not len(concepts):
        raise InputError(
            f"{what}: expected a non-empty list of OMOP concept ids or 'VOCABULARY/CODE' "
            f"strings such as 'SNOMED/13645005', got {concepts!r}"
        )
    pairs: set[tuple[str, str]] = set()
    ids: list[int] = []
    for c in concepts:
        if isinstance(c, bool):
            raise InputError(f"{what}: {c!r} is not a concept")
        if isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit()):
            ids.append(int(c))
            pairs.add(("OMOP", str(int(c))))
            continue
        m = _CODE_RE.match(str(c).strip())
        if not m:
            raise InputError(
                f"{what}: concept {c!r} is neither an OMOP concept id nor "
                "'VOCABULARY/CODE' (e.g. 'LOINC/1988-5')"
            )
        pairs.add((m["vocab"].strip(), m["code"].strip()))
    if ids and engine.has("mw_concepts"):
        listed = ", ".join(str(i) for i in sorted(set(ids)))
        found = engine.execute(
            f"SELECT vocabulary, code FROM mw_concepts WHERE concept_id IN ({listed})"
        )
        pairs.update(zip(found.column(0).to_pylist(), found.column(1).to_pylist(), strict=True))
    rows = sorted((str(v), str(c)) for v, c in pairs if v is not None and c is not None)
    return pa.table(
        {
            "vocabulary": pa.array([v for v, _ in rows], type=pa.string()),
            "code": pa.array([c for _, c in rows], type=pa.string()),
        }
    )


def first_occurrence(
    engine: SqlEngine,
    concepts: Sequence[int | str],
    *,
    domains: Iterable[str] = DOMAINS,
) -> tuple[list[str], pd.DataFrame]:
    """Index dates: each person's first dated record of any concept in ``concepts``.

    ``concepts`` holds OMOP concept ids (ints or digit strings, resolved through
    ``mw_concepts`` when the source has one; events of unmapped concepts carry vocabulary
    ``OMOP``) or ``'VOCABULARY/CODE'`` strings. Returns every person id of ``mw_persons``
    (sorted), and the frame of ``patient_id`` (str) and ``index_date`` (datetime64) of the
    persons with such a record, sorted by patient.
    """
    engine.require("mw_events", purpose="find first occurrences")
    engine.require("mw_persons", purpose="find first occurrences")
    doms = _domain_list(domains)
    engine.register("mw_concept_set", _concept_set(engine, concepts, what="index concepts"))
    out = engine.execute(
        f"""
SELECT e.patient_id, MIN(e.event_date) AS index_date
FROM mw_events AS e
JOIN mw_concept_set AS s ON e.vocabulary = s.vocabulary AND e.code = s.code
WHERE e.domain IN ({_in_list(doms)})
  AND e.event_date IS NOT NULL
  AND e.patient_id IN (SELECT patient_id FROM mw_persons)
GROUP BY e.patient_id"""
    ).to_pandas()
    persons = engine.execute(
        "SELECT DISTINCT patient_id FROM mw_persons WHERE patient_id IS NOT NULL"
    )
    out["patient_id"] = out["patient_id"].astype(str)
    out["index_date"] = pd.to_datetime(out["index_date"])
    out = out.sort_values("patient_id", kind="stable").reset_index(drop=True)
    return sorted(str(v) for v in persons.column(0).to_pylist()), out


def outcome_from_events(
    engine: SqlEngine,
    index: pd.DataFrame,
    *,
    concepts: Sequence[int | str] | None = None,
    death: bool = False,
    horizon_days: int | None,
) -> pd.DataFrame:
    """Outcomes after the index date from events of ``concepts`` and/or death.

    The event is the first record of a concept in ``concepts`` dated after the index date,
    or death (``mw_death``) on or after it, whichever comes first. Per index patient (in
    the index's order): ``time`` (days from the index date to the event, or to the end of
    observation when there is none: the last ``mw_observation`` end date, else the
    patient's last record or death; censored), ``event`` (bool) and ``outcome`` (bool:
    the event within ``horizon_days``; any event when it is None). An empty ``concepts``
    list counts as none.
    """
    if concepts is not None and not isinstance(concepts, str) and not len(concepts):
        concepts = None
    if concepts is None and not death:
        raise InputError("outcome: give concepts, death: true, or both")
    if horizon_days is not None and int(horizon_days) <= 0:
        raise InputError(f"outcome: horizon_days is {horizon_days}, expected > 0")
    engine.require("mw_events", purpose="find outcome events")
    if death:
        engine.require("mw_death", purpose="use death as the outcome")
    idx = _index_table(index)
    engine.register("mw_index", idx)
    parts = []
    if concepts is not None:
        engine.register("mw_concept_set", _concept_set(engine, concepts, what="outcome concepts"))
        parts.append(
            """SELECT e.patient_id, MIN(e.event_date) AS event_date
  FROM mw_events AS e
  JOIN mw_concept_set AS s ON e.vocabulary = s.vocabulary AND e.code = s.code
  JOIN mw_index AS i ON e.patient_id = i.patient_id
  WHERE e.event_date > i.index_date
  GROUP BY e.patient_id"""
        )
    if death:
        parts.append(
            """SELECT d.patient_id, MIN(d.death_date) AS event_date
  FROM mw_death AS d
  JOIN mw_index AS i ON d.patient_id = i.patient_id
  WHERE d.death_date >= i.index_date
  GROUP BY d.patient_id"""
        )
    if engine.has("mw_observation"):
        ends = "SELECT patient_id, MAX(end_date) AS end_date FROM mw_observation GROUP BY 1"
    else:
        last = ["SELECT patient_id, MAX(event_date) AS end_date FROM mw_events GROUP BY 1"]
        if engine.has("mw_death"):
            last.append("SELECT patient_id, MAX(death_date) AS end_date FROM mw_death GROUP BY 1")
        ends = (
            "SELECT patient_id, MAX(end_date) AS end_date FROM ("
            + " UNION ALL ".join(last)
            + ") AS u GROUP BY 1"
        )
    events = " UNION ALL ".join(parts)
    res = engine.execute(
        f"""
WITH ev AS ({events}),
first_event AS (SELECT patient_id, MIN(event_date) AS event_date FROM ev GROUP BY 1),
ends AS ({ends})
SELECT i.patient_id,
       f.event_date - i.index_date AS event_days,
       o.end_date - i.index_date AS end_days
FROM mw_index AS i
LEFT JOIN first_event AS f ON i.patient_id = f.patient_id
LEFT JOIN ends AS o ON i.patient_id = o.patient_id"""
    ).to_pandas()
    ids = [str(v) for v in idx.column("patient_id").to_pylist()]
    res = res.set_index(res["patient_id"].astype(str)).reindex(ids)
    event_days = res["event_days"].to_numpy(dtype=np.float64, na_value=np.nan)
    end_days = res["end_days"].to_numpy(dtype=np.float64, na_value=np.nan)
    event = ~np.isnan(event_days)
    horizon = np.inf if horizon_days is None else float(horizon_days)
    time = np.where(event, event_days, np.nan_to_num(end_days, nan=0.0))
    time = np.maximum(time, 0.0)
    return pd.DataFrame(
        {
            "patient_id": ids,
            "outcome": event & (time <= horizon),
            "time": time,
            "event": event,
        }
    )


def open_engine(
    *,
    database: str | Path | None = None,
    url: str | None = None,
    schema: str | None = None,
    base_dir: Path | None = None,
    id_column: Literal["person_source_value", "person_id"] = "person_source_value",
    domains: Iterable[str] = DOMAINS,
) -> SqlEngine:
    """A session over an OMOP CDM with the event-model views built (close it after use).

    ``database`` is a DuckDB file (relative to ``base_dir``), ``url`` a PostgreSQL URL;
    see :func:`medweave.sources.omop.open_omop`.
    """
    from medweave.sources.omop import open_omop

    path: Path | None = None
    if database is not None:
        path = Path(database).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    return open_omop(
        database=path, url=url, schema=schema, id_column=id_column, domains=list(domains)
    )
