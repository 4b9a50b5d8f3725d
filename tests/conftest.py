"""Shared pytest fixtures: databases.

``db_url`` is parametrized over SQLite (a fresh file per test) and PostgreSQL (a fresh
database per test on one server per session).  The PostgreSQL server is, in order:

1. the one at ``SCASERVER_TEST_PG_URL`` (an admin URL allowed to CREATE DATABASE);
2. a throwaway cluster started for the session, when running as root with the
   PostgreSQL 15 binaries in ``/usr/lib/postgresql/15/bin`` (initdb with trust auth as
   the ``postgres`` user, a private socket directory, a free loopback port);
3. none: the PostgreSQL tests fail when ``CI=true`` or ``SCASERVER_REQUIRE_PG=1``, and
   are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import hypothesis
import pytest
import pytest_twisted
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scaserver.store.migrate import upgrade

# Property tests assert behaviour, never time: no per-example deadline (hypothesis's default
# of 200 ms fails examples at random on a loaded machine).
hypothesis.settings.register_profile("scaserver", deadline=None)
hypothesis.settings.load_profile("scaserver")

PG_BIN = Path("/usr/lib/postgresql/15/bin")

F = TypeVar("F", bound=Callable[..., Any])


def twisted_test(test: F) -> F:
    """``pytest_twisted.ensureDeferred`` with its type kept (the plugin is untyped)."""
    return cast(F, pytest_twisted.ensureDeferred(test))


def twisted_fixture(fixture: F) -> F:
    """``pytest_twisted.async_yield_fixture`` with its type kept."""
    return cast(F, pytest_twisted.async_yield_fixture(fixture))


def _pg_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("SCASERVER_REQUIRE_PG") == "1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class PgServer:
    """A PostgreSQL server for tests; ``data_dir`` is set when this session owns the cluster."""

    admin_url: str
    data_dir: Path | None = None
    port: int = 0

    @property
    def owned(self) -> bool:
        return self.data_dir is not None

    def _pg_ctl(self, *args: str) -> None:
        assert self.data_dir is not None
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        assert self.data_dir is not None
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("-o", options, "-l", str(self.data_dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def admin_engine(self) -> Engine:
        return create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"scaserver_test_{uuid.uuid4().hex[:12]}"
        engine = self.admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        engine = self.admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()


def _start_cluster() -> PgServer:
    if os.geteuid() != 0:
        raise RuntimeError("not running as root, cannot start a PostgreSQL cluster as user postgres")
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"no PostgreSQL server binaries in {PG_BIN}")
    data_dir = Path(tempfile.mkdtemp(prefix="scaserver-pg-"))
    shutil.chown(data_dir, user="postgres", group="postgres")
    data_dir.chmod(0o700)
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(PG_BIN / "initdb"),
            "-D",
            str(data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    server = PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data_dir, port)
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | str]:
    """The session's PostgreSQL server, or the reason there is none (a string)."""
    external = os.environ.get("SCASERVER_TEST_PG_URL")
    if external:
        yield PgServer(external)
        return
    try:
        server = _start_cluster()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        detail = ""
        if isinstance(error, subprocess.CalledProcessError):
            detail = error.stderr.decode(errors="replace")
        yield f"PostgreSQL unavailable: {error} {detail}".strip()
        return
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            assert server.data_dir is not None
            shutil.rmtree(server.data_dir, ignore_errors=True)


def _require_pg(pg_server: PgServer | str) -> PgServer:
    if isinstance(pg_server, str):
        if _pg_required():
            pytest.fail(pg_server)
        pytest.skip(pg_server)
    return pg_server


@pytest.fixture
def pg(pg_server: PgServer | str) -> PgServer:
    """The PostgreSQL server (fails or skips as the module docstring says)."""
    return _require_pg(pg_server)


@pytest.fixture(scope="session")
def pg_database(pg_server: PgServer | str) -> Iterator[str]:
    """One database for the session's PostgreSQL tests; each test gets a schema in it."""
    pg = _require_pg(pg_server)
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@contextlib.contextmanager
def pg_schema(database_url: str, prefix: str = "t") -> Iterator[str]:
    """An empty PostgreSQL schema of its own in ``database_url``, dropped afterwards.

    The URL sets ``search_path`` to the schema, so tables, Alembic's ``alembic_version``
    and every query land there: as isolated as a database of its own, at a fraction of
    the cost of CREATE DATABASE.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield (
            make_url(database_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg: PgServer, pg_database: str) -> Iterator[str]:
    """An empty PostgreSQL schema of its own, dropped after the test (:func:`pg_schema`)."""
    with pg_schema(pg_database) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'scaserver.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database: a SQLite file, then a PostgreSQL database."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_db_url(request: pytest.FixtureRequest) -> str:
    """A database at the head revision: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        upgrade(url)
        return url
    migrated: str = request.getfixturevalue("pg_url")
    upgrade(migrated)
    return migrated
