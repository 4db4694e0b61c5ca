"""One SQL session on DuckDB (in-process) or PostgreSQL (ADBC), and the SQL dialect.

SQL is written once, in DuckDB's dialect, and transpiled with sqlglot for PostgreSQL
(:func:`to_postgres`). :class:`SqlEngine` holds the relations of the EHR event model (see
:mod:`medweave.sources.ehr_sql`) as temporary relations: registered data is cast to the
relation's columns and types (:data:`SCHEMAS`; a column of :data:`OPTIONAL_COLUMNS` may be
left out and is then NULL), and nothing is ever written to the user's database.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from medweave.errors import InputError

__all__ = [
    "OPTIONAL_COLUMNS",
    "SCHEMAS",
    "Dialect",
    "SqlEngine",
    "quote_ident",
    "quote_literal",
    "redact_url",
    "to_postgres",
]

Dialect = Literal["duckdb", "postgres"]

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
            ("value_text", pa.string()),
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
#: Columns a registered relation may leave out: they are NULL. ``mw_events.value_text`` is
#: the value as stored when it is not a number (``'6.1%'``): the value check reports it.
OPTIONAL_COLUMNS: dict[str, frozenset[str]] = {"mw_events": frozenset({"value_text"})}


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
    datetimes and numbers in other widths are cast; a missing column is an error unless
    it is optional, when it is NULL)."""
    columns = []
    for field in schema:
        if field.name not in table.column_names and field.name in OPTIONAL_COLUMNS.get(name, ()):
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
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
