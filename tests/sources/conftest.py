"""Fixtures for the source readers: a PostgreSQL server, and CDM loading into it.

``pg_url`` is ``MEDWEAVE_TEST_PG_URL`` when set; otherwise a throwaway server is started
with the PostgreSQL binaries on this machine (``initdb``, ``pg_ctl``; as root they run as
the ``postgres`` user) in a temporary folder on a free port, and stopped at the end. When
neither works the PostgreSQL tests are skipped, or fail if ``MEDWEAVE_TEST_PG_REQUIRED=1``
(as in ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from medweave.sources.ehr_sql import SqlEngine, quote_ident


class _Unavailable(Exception):
    """No PostgreSQL server can be started here (the reason is the message)."""


@dataclass
class _Server:
    root: Path
    data: Path
    prefix: list[str]
    pg_ctl: str
    url: str

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise _Unavailable(f"{name} not found on PATH or in /usr/lib/postgresql/*/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_INITDB_OPTIONS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
_WAIT = ("-w", "-t", "60")


def _start_server() -> _Server:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="medweave-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise _Unavailable("running as root and there is no 'postgres' user") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            raise _Unavailable("running as root and runuser is not available")
        prefix = [runuser, "-u", "postgres", "--"]
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), *_INITDB_OPTIONS],
            capture_output=True,
            check=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        shutil.rmtree(root, ignore_errors=True)
        detail = getattr(err, "stderr", b"") or b""
        raise _Unavailable(f"initdb failed: {err} {detail.decode(errors='replace')}") from err
    last: Exception | None = None
    log = root / "server.log"
    for _ in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        try:
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-l", str(log), *_WAIT, "-o", options, "start"],
                capture_output=True,
                check=True,
                timeout=90,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            last = err
            continue
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        server = _Server(root, data, prefix, pg_ctl, url)
        try:
            _create_database(url, "medweave_test")
        except Exception:
            server.stop()
            raise
        server.url = f"postgresql://postgres@127.0.0.1:{port}/medweave_test"
        return server
    text = log.read_text(errors="replace") if log.exists() else ""
    shutil.rmtree(root, ignore_errors=True)
    raise _Unavailable(f"pg_ctl start failed: {last}; {text[-500:]}")


def _create_database(url: str, name: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL database the tests may create schemas in."""
    given = os.environ.get("MEDWEAVE_TEST_PG_URL")
    if given:
        yield given
        return
    try:
        server = _start_server()
    except _Unavailable as err:
        if os.environ.get("MEDWEAVE_TEST_PG_REQUIRED") == "1":
            pytest.fail(f"PostgreSQL is required (MEDWEAVE_TEST_PG_REQUIRED=1): {err}")
        pytest.skip(f"no PostgreSQL server: {err}")
    try:
        yield server.url
    finally:
        server.stop()


PgLoader = Callable[..., str]


@pytest.fixture(scope="session")
def pg_load(pg_url: str) -> Iterator[PgLoader]:
    """``pg_load(duckdb_file, tables=[...])``: copy tables into a new schema, return its name.

    Tables and columns keep their names as stored (so upper-case names stay upper-case).
    The schemas are dropped at the end of the session.
    """
    import adbc_driver_postgresql.dbapi as pg

    schemas: list[str] = []

    def load(path: Path, *, tables: list[str] | None = None, rename: bool = False) -> str:
        schema = f"mw_{uuid.uuid4().hex[:10]}"
        src = duckdb.connect(str(path), read_only=True)
        try:
            stored = [r[0] for r in src.execute("SHOW TABLES").fetchall()]
            wanted = {t.lower() for t in tables} if tables else None
            with pg.connect(pg_url, autocommit=True) as con, con.cursor() as cur:
                cur.execute(f"CREATE SCHEMA {schema}")
                schemas.append(schema)
                for name in stored:
                    if wanted is not None and name.lower() not in wanted:
                        continue
                    data = src.sql(f"SELECT * FROM {quote_ident(name)}").to_arrow_table()
                    target = name.upper() if rename else name
                    if rename:
                        data = data.rename_columns([c.upper() for c in data.column_names])
                    cur.adbc_ingest(target, data, mode="create", db_schema_name=schema)
        finally:
            src.close()
        return schema

    yield load
    with (
        contextlib.suppress(Exception),
        pg.connect(pg_url, autocommit=True) as con,
        con.cursor() as cur,
    ):
        for schema in schemas:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextlib.contextmanager
def event_engine(
    request: pytest.FixtureRequest,
    tables: dict[str, object],
    origins: dict[str, str],
) -> Iterator[SqlEngine]:
    """A DuckDB or PostgreSQL engine (``request.param``) holding the event-model
    ``tables`` (name -> DataFrame), for tests that run on both databases."""
    if request.param == "duckdb":
        eng = SqlEngine.duckdb(label="test events")
    else:
        eng = SqlEngine.postgres(request.getfixturevalue("pg_url"), label="test events")
    for name, frame in tables.items():
        eng.register(name, frame)
    eng.origins = origins
    try:
        yield eng
    finally:
        eng.close()
