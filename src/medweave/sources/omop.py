"""Reader ``omop``: an OMOP CDM 5.x database in a DuckDB file or on PostgreSQL.

The CDM tables are never modified: a DuckDB file is attached read-only to an in-memory
session, and on PostgreSQL only temporary views are created. Table and column names are
matched case-insensitively through the information schema (exports differ: Eunomia has
upper-case columns), and the views of the EHR event model (see
:mod:`medweave.sources.ehr_sql`) are built from ``person``, ``condition_occurrence``,
``drug_exposure``, ``measurement`` and ``visit_occurrence``, with vocabulary and code from
``concept`` when it has them (else vocabulary ``OMOP`` and the concept id). ``death`` and
``observation_period``, when present, feed :func:`~medweave.sources.ehr_sql.outcome_from_events`.

**Presence.** A cohort patient is present when the ``person`` table has their row
(``id_column``) and at least one of the domain tables a coded, dated record of theirs in
the window; the others are counted in the audit as ``no_person_record`` (records whose
``person_id`` has no person row cannot be linked to anyone: they are ``unknown_patient``
rows) or ``no_records_in_window``.

**Value checks** (:data:`~medweave.sources.ehr_sql.CHECKS`, in SQL, among the records in
the window of cohort patients): ``value_as_number`` stored as text that is not a number
(``'6.1%'``), or not finite; ``year_of_birth`` outside 1850 to this year; an age at the
index date below 0 (birth after it) or above 125. An error names the database, the table
and column, the patient and the value; with ``on_error: skip`` the records are left out
(the ages left missing) and counted by reason. A ``person_source_value`` held by two
persons is an error either way (choose ``id_column: person_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._ehr_spec import EhrSpec, ehr_block
from medweave.sources.ehr_sql import DOMAINS, SqlEngine, quote_ident

__all__ = ["DOMAIN_TABLES", "OmopSpec", "open_omop", "open_spec", "read_omop"]

IdColumn = Literal["person_source_value", "person_id"]

#: Domain -> (table, concept id column, date column).
DOMAIN_TABLES: dict[str, tuple[str, str, str]] = {
    "condition": ("condition_occurrence", "condition_concept_id", "condition_start_date"),
    "drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    "measurement": ("measurement", "measurement_concept_id", "measurement_date"),
    "visit": ("visit_occurrence", "visit_concept_id", "visit_start_date"),
}
MALE, FEMALE = 8507, 8532
_ALIAS = "cdm"  # the attached DuckDB database
_NUMERIC = {  # base type names (before any "(p, s)") read as numbers directly
    "double",
    "double precision",
    "float",
    "float4",
    "float8",
    "real",
    "decimal",
    "numeric",
    "int",
    "int2",
    "int4",
    "int8",
    "integer",
    "bigint",
    "smallint",
    "tinyint",
    "hugeint",
    "ubigint",
    "uinteger",
    "usmallint",
    "utinyint",
}
# A number in a text value column: decimal, or inf / infinity (not finite: reported).
_NUMBER_RE = (
    r"^\s*[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
    r"|[iI][nN][fF]([iI][nN][iI][tT][yY])?)\s*$"
)


class OmopSpec(EhrSpec):
    """``type: omop``: exactly one of ``database`` (DuckDB file) or ``url`` (PostgreSQL);
    ``form: sequence`` for event sequences instead of features (see :class:`EhrSpec`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    database: str | None = None
    url: str | None = None
    cdm_schema: str | None = Field(default=None, alias="schema")
    id_column: IdColumn = "person_source_value"

    @model_validator(mode="after")
    def _one_location(self) -> OmopSpec:
        if (self.database is None) == (self.url is None):
            raise ValueError(
                "give exactly one of database (a DuckDB file) or url (postgresql://...)"
            )
        return self


@dataclass
class _Table:
    name: str  # as stored
    columns: dict[str, tuple[str, str]]  # lower-case name -> (stored name, data type)

    def col(self, name: str) -> str:
        return quote_ident(self.columns[name][0])

    def is_numeric(self, name: str) -> bool:
        return self.columns[name][1].lower().split("(")[0].strip() in _NUMERIC


class _Cdm:
    """The CDM tables of one schema, looked up case-insensitively."""

    def __init__(self, engine: SqlEngine, *, schema: str | None) -> None:
        self.engine = engine
        if engine.dialect == "duckdb":
            rows = engine.execute(
                "SELECT table_schema, table_name, column_name, data_type "
                "FROM information_schema.columns "
                f"WHERE table_catalog = '{_ALIAS}' ORDER BY ordinal_position"
            )
        else:
            rows = engine.execute(
                "SELECT table_schema, table_name, column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') "
                "AND table_schema NOT LIKE 'pg\\_%' ORDER BY ordinal_position"
            )
        schemas: dict[str, dict[str, _Table]] = {}
        stored_schema: dict[str, str] = {}
        for sch, tab, col, kind in zip(
            *(rows.column(i).to_pylist() for i in range(4)), strict=True
        ):
            stored_schema.setdefault(sch.lower(), sch)
            tables = schemas.setdefault(sch.lower(), {})
            table = tables.setdefault(tab.lower(), _Table(tab, {}))
            table.columns.setdefault(col.lower(), (col, str(kind)))
        if schema is not None:
            if schema.lower() not in schemas:
                listed = ", ".join(sorted(stored_schema.values())) or "none"
                raise InputError(
                    f"{engine.label}: schema {schema!r} not found (schemas with tables: "
                    f"{listed}); set schema: to the one holding the CDM tables"
                )
            key = schema.lower()
        else:
            with_person = sorted(k for k, t in schemas.items() if "person" in t)
            if len(with_person) > 1:
                names = ", ".join(stored_schema[k] for k in with_person)
                raise InputError(
                    f"{engine.label}: several schemas have a person table ({names}); set "
                    "schema: to the one holding the CDM tables"
                )
            if with_person:
                key = with_person[0]
            else:
                key = "main" if engine.dialect == "duckdb" else "public"
        self.schema = stored_schema.get(key, key)
        self.tables = schemas.get(key, {})

    def ref(self, table: _Table) -> str:
        parts = [self.schema, table.name]
        if self.engine.dialect == "duckdb":
            parts.insert(0, _ALIAS)
        return ".".join(quote_ident(p) for p in parts)

    def find(self, name: str) -> _Table | None:
        return self.tables.get(name)

    def table(self, name: str, *, columns: list[str], purpose: str) -> _Table:
        """The table ``name`` with ``columns``, or an :class:`InputError` saying what is missing."""
        table = self.find(name)
        if table is None:
            listed = ", ".join(sorted(self.tables)) or "none"
            raise InputError(
                f"{self.engine.label}: table {name!r} not found in schema {self.schema!r} "
                f"(tables: {listed}); expected the OMOP CDM 5.x table {name}, {purpose}"
            )
        for col in columns:
            if col not in table.columns:
                found = ", ".join(c for c, _ in table.columns.values())
                raise InputError(
                    f"{self.engine.label}: table {name!r} has no column {col!r} (columns: "
                    f"{found}); expected the OMOP CDM 5.x column {name}.{col}, {purpose}"
                )
        return table

    def missing_columns(self, name: str, columns: list[str]) -> str | None:
        """Why the optional table ``name`` cannot be used, or None when it can."""
        table = self.find(name)
        if table is None:
            return f"table {name!r} not found in schema {self.schema!r}"
        for col in columns:
            if col not in table.columns:
                found = ", ".join(c for c, _ in table.columns.values())
                return f"table {name!r} has no column {col!r} (columns: {found})"
        return None


def _as_bigint(expr: str) -> str:
    return f"CAST({expr} AS BIGINT)"


def _number(table: _Table, column: str, alias: str) -> tuple[str, str]:
    """``column`` as a number, and as stored where it is text that is not a number (NULL
    otherwise: the value check reports such text instead of reading it as no value).

    A numeric column is cast as it is; in a text column, a number (or ``inf``, which the
    check then reports as not finite) is cast, blank text and ``nan`` are no value."""
    col = f"{alias}.{table.col(column)}"
    if table.is_numeric(column):
        return f"CAST({col} AS DOUBLE)", "CAST(NULL AS VARCHAR)"
    text = f"CAST({col} AS VARCHAR)"
    number = f"REGEXP_MATCHES({text}, '{_NUMBER_RE}')"
    blank = f"LOWER(TRIM({text})) IN ('', 'nan', '+nan', '-nan')"
    return (
        f"CASE WHEN {number} THEN CAST({text} AS DOUBLE) END",
        f"CASE WHEN {number} OR {blank} THEN NULL ELSE {text} END",
    )


def _birth_date(person: _Table) -> str:
    """birth_datetime as a date, else year/month/day when they form a valid date."""
    parts = []
    if "birth_datetime" in person.columns:
        parts.append(f"CAST(p.{person.col('birth_datetime')} AS DATE)")
    if {"month_of_birth", "day_of_birth"} <= set(person.columns):
        y = _as_bigint(f"p.{person.col('year_of_birth')}")
        m = _as_bigint(f"p.{person.col('month_of_birth')}")
        d = _as_bigint(f"p.{person.col('day_of_birth')}")
        leap = f"(({y} % 4 = 0 AND {y} % 100 <> 0) OR {y} % 400 = 0)"
        days_in_month = (
            f"CASE WHEN {m} IN (4, 6, 9, 11) THEN 30 "
            f"WHEN {m} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END ELSE 31 END"
        )
        parts.append(
            f"CASE WHEN {y} BETWEEN 1 AND 9999 AND {m} BETWEEN 1 AND 12 AND {d} >= 1 "
            f"AND {d} <= {days_in_month} "
            f"THEN MAKE_DATE(CAST({y} AS INTEGER), CAST({m} AS INTEGER), CAST({d} AS INTEGER)) "
            "END"
        )
    if not parts:
        return "CAST(NULL AS DATE)"
    return parts[0] if len(parts) == 1 else f"COALESCE({', '.join(parts)})"


def build_views(
    engine: SqlEngine,
    *,
    schema: str | None,
    id_column: IdColumn,
    domains: tuple[str, ...] | list[str],
) -> None:
    """Create the event-model views over the CDM.

    ``mw_events``, ``mw_persons``, ``mw_concepts`` (when ``concept`` exists), ``mw_death``
    and ``mw_observation`` (when their tables are usable), and the keyed forms the feature
    queries prefer, so that records are matched to the cohort on an integer instead of
    text: ``mw_patient_keys(patient_id, person_key)``, ``mw_events_keyed`` (the columns of
    ``mw_events`` but ``person_key`` = ``person_id`` for ``patient_id``, and no ``unit``)
    and ``mw_event_dates(person_key, domain, event_date)`` (no concept lookups).
    """
    cdm = _Cdm(engine, schema=schema)
    person_cols = ["person_id", "gender_concept_id", "year_of_birth"]
    if id_column == "person_source_value":
        person_cols.append("person_source_value")
    person = cdm.table(
        "person", columns=person_cols, purpose=f"with id_column {id_column} (patients)"
    )
    key_of_person = _as_bigint("p." + person.col("person_id"))
    if id_column == "person_source_value":
        pid_of_person = f"CAST(p.{person.col('person_source_value')} AS VARCHAR)"
    else:
        pid_of_person = f"CAST({key_of_person} AS VARCHAR)"
    engine.origins["person"] = f"table {person.name}"
    gender = _as_bigint("p." + person.col("gender_concept_id"))
    engine.create_view(
        "mw_persons",
        f"""SELECT {pid_of_person} AS patient_id,
       CASE WHEN {gender} = {MALE} THEN 'M' WHEN {gender} = {FEMALE} THEN 'F' END AS sex,
       CAST(p.{person.col("year_of_birth")} AS INTEGER) AS year_of_birth,
       {_birth_date(person)} AS birth_date
FROM {cdm.ref(person)} AS p""",
    )
    dup = engine.execute(
        "SELECT patient_id, COUNT(*) AS n FROM mw_persons WHERE patient_id IS NOT NULL "
        "GROUP BY patient_id HAVING COUNT(*) > 1 ORDER BY patient_id LIMIT 1"
    )
    if dup.num_rows:
        pid = dup.column(0)[0].as_py()
        raise InputError(
            f"{engine.label}: {id_column} {pid!r} belongs to {dup.column(1)[0].as_py()} rows "
            f"of table person; patient ids must be unique (use id_column: person_id)"
        )
    engine.create_view(
        "mw_patient_keys",
        f"SELECT {pid_of_person} AS patient_id, {key_of_person} AS person_key "
        f"FROM {cdm.ref(person)} AS p WHERE {pid_of_person} IS NOT NULL",
    )

    # Concepts: vocabulary and code of each concept id (when the table exists).
    concept = cdm.find("concept")
    if concept is not None:
        concept = cdm.table(
            "concept",
            columns=["concept_id", "vocabulary_id", "concept_code"],
            purpose="to name the concepts",
        )
        engine.create_view(
            "mw_concepts",
            f"SELECT {_as_bigint('c.' + concept.col('concept_id'))} AS concept_id, "
            f"CAST(c.{concept.col('vocabulary_id')} AS VARCHAR) AS vocabulary, "
            f"CAST(c.{concept.col('concept_code')} AS VARCHAR) AS code "
            f"FROM {cdm.ref(concept)} AS c "
            f"WHERE c.{concept.col('vocabulary_id')} IS NOT NULL "
            f"AND c.{concept.col('concept_code')} IS NOT NULL",
        )
    else:
        engine.unavailable["mw_concepts"] = f"table 'concept' not found in schema {cdm.schema!r}"

    parts, keyed_parts, date_parts = [], [], []
    for domain in domains:
        table_name, concept_col, date_col = DOMAIN_TABLES[domain]
        required = ["person_id", concept_col, date_col]
        if domain == "measurement":
            required.append("value_as_number")
        table = cdm.table(
            table_name,
            columns=required,
            purpose=f"for domain {domain!r} (or leave it out of domains:)",
        )
        engine.origins[domain] = f"table {table.name} (column {table.columns[date_col][0]})"
        if domain == "measurement":
            stored = table.columns["value_as_number"][0]
            engine.origins["measurement.value"] = f"table {table.name} column {stored}"
        parts.append(_domain_select(engine, cdm, table, domain=domain, form="events"))
        keyed_parts.append(_domain_select(engine, cdm, table, domain=domain, form="keyed"))
        date_parts.append(_domain_select(engine, cdm, table, domain=domain, form="dates"))
    engine.create_view("mw_events", "\nUNION ALL\n".join(parts))
    engine.create_view("mw_events_keyed", "\nUNION ALL\n".join(keyed_parts))
    engine.create_view("mw_event_dates", "\nUNION ALL\n".join(date_parts))

    # Optional: death and observation periods, for outcomes.
    def keyed(table: _Table) -> str:
        return (
            f"FROM {cdm.ref(table)} AS t JOIN mw_patient_keys AS k "
            f"ON {_as_bigint('t.' + table.col('person_id'))} = k.person_key"
        )

    why = cdm.missing_columns("death", ["person_id", "death_date"])
    if why is None:
        death = cdm.tables["death"]
        engine.create_view(
            "mw_death",
            f"SELECT k.patient_id, CAST(t.{death.col('death_date')} AS DATE) AS death_date "
            + keyed(death),
        )
    else:
        engine.unavailable["mw_death"] = why
    obs_cols = ["person_id", "observation_period_start_date", "observation_period_end_date"]
    why = cdm.missing_columns("observation_period", obs_cols)
    if why is None:
        obs = cdm.tables["observation_period"]
        engine.create_view(
            "mw_observation",
            "SELECT k.patient_id, "
            f"CAST(t.{obs.col('observation_period_start_date')} AS DATE) AS start_date, "
            f"CAST(t.{obs.col('observation_period_end_date')} AS DATE) AS end_date " + keyed(obs),
        )
    else:
        engine.unavailable["mw_observation"] = why


def _domain_select(
    engine: SqlEngine,
    cdm: _Cdm,
    table: _Table,
    *,
    domain: str,
    form: Literal["events", "keyed", "dates"],
) -> str:
    """One domain table as rows of ``mw_events`` (form ``events``), ``mw_events_keyed``
    (``keyed``) or ``mw_event_dates`` (``dates``)."""
    _, concept_col, date_col = DOMAIN_TABLES[domain]
    key = _as_bigint("t." + table.col("person_id"))
    event_date = f"CAST(t.{table.col(date_col)} AS DATE)"
    if form == "dates":
        return (
            f"SELECT {key} AS person_key, '{domain}' AS domain, {event_date} AS event_date "
            f"FROM {cdm.ref(table)} AS t"
        )
    cid = f"t.{table.col(concept_col)}"
    joins = []
    if form == "events":
        joins.append(f"LEFT JOIN mw_patient_keys AS k ON {key} = k.person_key")
    fallback_code = f"COALESCE(CAST({_as_bigint(cid)} AS VARCHAR), '0')"
    if engine.has("mw_concepts"):
        joins.append(f"LEFT JOIN mw_concepts AS c ON c.concept_id = {cid}")
        vocabulary = "CASE WHEN c.concept_id IS NULL THEN 'OMOP' ELSE c.vocabulary END"
        code = f"CASE WHEN c.concept_id IS NULL THEN {fallback_code} ELSE c.code END"
    else:
        vocabulary, code = "'OMOP'", fallback_code
    value, unit = "CAST(NULL AS DOUBLE)", "CAST(NULL AS VARCHAR)"
    value_text = "CAST(NULL AS VARCHAR)"
    if domain == "measurement":
        value, value_text = _number(table, "value_as_number", "t")
    if domain == "measurement" and form == "events":
        unit_parts = []
        if engine.has("mw_concepts") and "unit_concept_id" in table.columns:
            joins.append(
                f"LEFT JOIN mw_concepts AS u ON u.concept_id = t.{table.col('unit_concept_id')}"
            )
            unit_parts.append("u.code")
        if "unit_source_value" in table.columns:
            unit_parts.append(f"CAST(t.{table.col('unit_source_value')} AS VARCHAR)")
        if unit_parts:
            unit = unit_parts[0] if len(unit_parts) == 1 else f"COALESCE({', '.join(unit_parts)})"
    who = "k.patient_id" if form == "events" else f"{key} AS person_key"
    columns = [
        who,
        f"'{domain}' AS domain",
        f"CAST({vocabulary} AS VARCHAR) AS vocabulary",
        f"CAST({code} AS VARCHAR) AS code",
        f"{event_date} AS event_date",
        f"{value} AS value",
    ]
    if form == "events":
        columns.append(f"{unit} AS unit")
    columns.append(f"{value_text} AS value_text")
    return f"SELECT {', '.join(columns)} FROM {cdm.ref(table)} AS t " + " ".join(joins)


def open_omop(
    *,
    database: str | Path | None = None,
    url: str | None = None,
    schema: str | None = None,
    id_column: IdColumn = "person_source_value",
    domains: tuple[str, ...] | list[str] = DOMAINS,
) -> SqlEngine:
    """A SQL session over an OMOP CDM with the event-model views built (close it after use).

    ``database`` is a DuckDB file (opened read-only), ``url`` a PostgreSQL URL.
    """
    if (database is None) == (url is None):
        raise InputError("OMOP source: give exactly one of database (DuckDB file) or url")
    for d in domains:
        if d not in DOMAIN_TABLES:
            raise InputError(f"OMOP source: domain {d!r} is not one of {', '.join(DOMAINS)}")
    if database is not None:
        path = Path(database)
        label = f"OMOP database {str(path)!r}"
        if not path.is_file():
            raise InputError(
                f"{label}: file not found; expected a DuckDB file with OMOP CDM tables"
            )
        engine = SqlEngine.duckdb(label=label)
        try:
            engine.attach_duckdb(str(path), alias=_ALIAS)
        except Exception as err:
            engine.close()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"{label}: cannot open it read-only as a DuckDB database ({reason}); is it a "
                "DuckDB file, and not held open for writing by another program?"
            ) from err
    else:
        assert url is not None
        engine = SqlEngine.postgres(url)
        engine.label = f"OMOP database {engine.label!r}" + (f" schema {schema!r}" if schema else "")
    try:
        build_views(engine, schema=schema, id_column=id_column, domains=list(domains))
    except BaseException:
        engine.close()
        raise
    return engine


def open_spec(spec: OmopSpec, *, base_dir: Path) -> SqlEngine:
    """:func:`open_omop` for a config entry; ``database`` is relative to ``base_dir``."""
    database = None
    if spec.database is not None:
        p = Path(spec.database).expanduser()
        database = p if p.is_absolute() else base_dir / p
    return open_omop(
        database=database,
        url=spec.url,
        schema=spec.cdm_schema,
        id_column=spec.id_column,
        domains=spec.domains,
    )


@register(
    "omop",
    spec=OmopSpec,
    description="OMOP CDM 5.x database: DuckDB file or PostgreSQL URL; features, or event "
    "sequences with form: sequence",
)
def read_omop(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """Features (or, with ``form: sequence``, event sequences) of the cohort's patients
    from an OMOP CDM (see :func:`~medweave.sources._ehr_spec.ehr_block`)."""
    if not isinstance(spec, OmopSpec):
        raise TypeError(f"read_omop needs an OmopSpec, got {type(spec).__name__}")
    with open_spec(spec, base_dir=ctx.base_dir) as engine:
        return ehr_block(engine, spec, ctx)
