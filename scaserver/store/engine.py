r"""The SQLAlchemy engine for a database URL (``sqlite:///path`` or ``postgresql+psycopg://...``).

Kept apart from the repositories so that migrations and start-up checks need nothing but
SQLAlchemy.

Text that reaches the database is valid text.  SIP header values are decoded once, as UTF-8
with ``surrogateescape`` (``sip/parser.py``), so a peer's octets that are not UTF-8 arrive
here as lone surrogates, which neither SQLite nor PostgreSQL can store; PostgreSQL also
refuses NUL.  Every engine made by :func:`make_engine` therefore rewrites every string
parameter of every statement, in one place (a ``before_cursor_execute`` hook), with
:func:`stored_text`:

* an octet that was not UTF-8 (U+DC80..U+DCFF) becomes the four characters ``\xNN``
  (``Phone\udcff`` is stored as ``Phone\xff``);
* any other lone surrogate (U+D800..U+DFFF, from a JSON ``\ud800`` escape) becomes
  ``\uNNNN``; NUL becomes ``\x00``;
* everything else, backslashes included, is stored as it is.

The escaping is one-way: rows read back carry the escaped text.  It applies to keys and
look-ups alike, so a row written with a surrogate is found again by the same value.  The
engines also hide statement parameters from error messages and logs (``hide_parameters``),
so a failed flush never prints contacts or tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

__all__ = [
    "DatabaseError",
    "DatabaseReadOnlyError",
    "Engine",
    "FittedRows",
    "MissingDriverError",
    "is_row_fault",
    "is_sqlite",
    "make_engine",
    "probe_writable",
    "stored_text",
]


#: Any failure of the database or of the SQL sent to it: what a command above the store catches.
DatabaseError = sa_exc.SQLAlchemyError


class MissingDriverError(Exception):
    """The URL names a database whose driver is an extra that is not installed."""


_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if code == 0:
        return "\\x00"
    return f"\\u{code:04x}"


def stored_text(value: str) -> str:
    r"""``value`` as the database stores it: octets that were not UTF-8 as ``\xNN``, other
    lone surrogates as ``\uNNNN``, NUL as ``\x00`` (see the module docstring)."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub(_escape, value)


def _unstorable(values: Iterable[object]) -> bool:
    # The strings joined are ASCII without NUL exactly when each one is: one test per row (or
    # batch) instead of a generator step per value.
    texts = "".join([value for value in values if isinstance(value, str)])
    return not texts.isascii() or "\x00" in texts


def _stored_row(row: Any) -> Any:
    """One statement's parameters (a dict or a sequence), rebuilt only when needed."""
    if isinstance(row, dict):
        if not _unstorable(row.values()):
            return row
        return {name: stored_text(v) if isinstance(v, str) else v for name, v in row.items()}
    if isinstance(row, (list, tuple)) and _unstorable(row):
        return type(row)(stored_text(v) if isinstance(v, str) else v for v in row)
    return row


class FittedRows(list[tuple[object, ...]]):
    """A batch of positional rows whose every text is :func:`stored_text` already: what
    ``store/writes.py`` hands to the driver after fitting each column of the batch
    (``fitted_batch`` there).  The hook passes such a batch on without looking at its texts
    again; any other parameters are checked value by value."""

    __slots__ = ()


def _values(row: Any) -> Iterable[object]:
    if isinstance(row, dict):
        return row.values()
    return row if isinstance(row, (list, tuple)) else ()


def _before_cursor_execute(
    _conn: object, _cursor: object, statement: str, parameters: Any, _context: object, many: bool
) -> tuple[str, Any]:
    if type(parameters) is FittedRows:
        return statement, parameters
    if many and isinstance(parameters, (list, tuple)):
        # A batch whose text is all storable (the rows of store/writes.py are fitted) goes as it is.
        texts = "".join([value for row in parameters for value in _values(row) if isinstance(value, str)])
        if texts.isascii() and "\x00" not in texts:
            return statement, parameters
        return statement, type(parameters)(_stored_row(row) for row in parameters)
    return statement, _stored_row(parameters)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str, *, pool_size: int = 4, connect_timeout_s: float = 5.0) -> Engine:
    """The engine for ``url``.

    SQLite: WAL journal and enforced foreign keys on every connection, ``connect_timeout_s``
    as the busy time-out.  PostgreSQL: a pool of ``pool_size`` connections checked with a
    ping before use (so connections broken by a server restart are replaced), and a
    connect time-out so a down server fails a flush quickly instead of hanging a worker.
    Both: every string parameter through :func:`stored_text`, parameters hidden from errors.
    """
    if is_sqlite(url):
        engine = create_engine(
            url,
            pool_size=pool_size,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args={"timeout": connect_timeout_s},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
    else:
        try:
            import psycopg  # noqa: F401, PLC0415 (the driver of postgresql+psycopg://, an optional extra)
        except ImportError:
            raise MissingDriverError(
                f"{make_url(url).render_as_string()}: the PostgreSQL driver is not installed: "
                "install scaserver with the postgresql extra (pip install 'scaserver[postgresql]')"
            ) from None
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args={"connect_timeout": max(1, round(connect_timeout_s))},
        )
    event.listen(engine, "before_cursor_execute", _before_cursor_execute, retval=True)
    return engine


class DatabaseReadOnlyError(Exception):
    """The database answers but would refuse writes (a hot standby, a read-only session)."""


def probe_writable(engine: Engine) -> None:
    """One cheap round trip that fails unless the database takes writes: PostgreSQL's
    ``transaction_read_only`` (on for a standby or ``default_transaction_read_only``),
    SQLite's ``query_only``.  Raises the driver's error when the server cannot be reached."""
    query = "PRAGMA query_only" if is_sqlite(str(engine.url)) else "SHOW transaction_read_only"
    with engine.connect() as conn:
        value = conn.execute(text(query)).scalar()
    if str(value).lower() in ("1", "on", "true"):
        raise DatabaseReadOnlyError(f"{query}: {value}")


def is_row_fault(error: BaseException) -> bool:
    """Whether a failed write is the fault of the rows written, so writing them again can
    never succeed: a value the database refuses (``DataError``: out of range, too long, bad
    encoding), a broken constraint (``IntegrityError``), or a parameter refused before it
    reached the database (``StatementError``, ``UnicodeError``, ``ValueError``, ``TypeError``,
    overflow).  A database that is down, locked, restarting or not migrated
    (``OperationalError``, ``InterfaceError``, ``ProgrammingError``, a dropped connection,
    a pool time-out, anything else) is not: those writes are kept and retried.
    """
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return False
        return isinstance(error, (sa_exc.DataError, sa_exc.IntegrityError))
    if isinstance(error, sa_exc.StatementError):
        return True
    if isinstance(error, sa_exc.SQLAlchemyError):
        return False
    return isinstance(error, (ValueError, TypeError, ArithmeticError))
