"""Batched, idempotent writes of rows, the way every SQL repository of ``store/`` writes.

Each call is one transaction.  Upserts are batched ``INSERT ... ON CONFLICT DO UPDATE`` on
the key's unique constraint (PostgreSQL and SQLite); a key with a nullable column
(``trusted_peer.transport``) uses "update, else insert" with ``IS NOT DISTINCT FROM``.
Upserts and deletes are idempotent, which is what the write-behind queue's retries rely on.
A write to the directory (subscribers, trusted peers, lines) also bumps the directory's
change marker in the same transaction (read by ``store.directory.directory_generation``).

Every row written goes through :func:`fitted_text`: its text is escaped as ``store/engine.py``
describes (``\\xNN`` for an octet that was not UTF-8) and cut to its column's length, so no
header a peer sends, however long or whatever its octets, makes the database refuse a row.
A batch is fitted a column at a time (:func:`fitted_batch`), a single mapping by :func:`fitted`.
"""

from __future__ import annotations

import copy
import functools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs
from sqlalchemy import Connection, Dialect, Engine, Table, and_, insert, select, tuple_, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnElement

from scaserver.store import tables
from scaserver.store.engine import FittedRows, stored_text

T = TypeVar("T")


def _key_clause(table: Table, key: Mapping[str, object]) -> ColumnElement[bool]:
    return and_(*(table.c[name].is_not_distinct_from(value) for name, value in key.items()))


#: Rows per statement on the batched paths (well under SQLite's parameter limit).
CHUNK = 500


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.cache
def _lengths(table: Table) -> Mapping[str, int]:
    lengths = {column.name: getattr(column.type, "length", None) for column in table.columns}
    return {name: length for name, length in lengths.items() if isinstance(length, int)}


def fitted_text(value: str, length: int | None) -> str:
    """``value`` as a column of ``length`` characters (None: ``Text``, not cut) holds it:
    escaped by ``stored_text``, then cut.  The one rule every text written goes through."""
    if value.isascii() and "\x00" not in value and (length is None or len(value) <= length):
        return value  # the common case: nothing to do
    text = stored_text(value)
    return text[:length] if length is not None and len(text) > length else text


def fitted(table: Table, row: Mapping[str, object]) -> dict[str, object]:
    """``row`` as ``table`` can hold it: each text as :func:`fitted_text` makes it for the
    length of its column (``String(n)``, ``CHAR(n)``; ``Text`` is not cut).  A dict that
    needs nothing of this is returned as it is (no copy)."""
    lengths = _lengths(table)
    out: dict[str, object] | None = None
    for name, value in row.items():
        if not isinstance(value, str):
            continue
        text = fitted_text(value, lengths.get(name))
        if text is value:
            continue
        if out is None:
            out = dict(row)
        out[name] = text
    if out is not None:
        return out
    return row if isinstance(row, dict) else dict(row)


_NONE: Final = type(None)
_PLAIN_KINDS: Final = frozenset({str, _NONE})


def fitted_batch(table: Table, columns: Sequence[str], rows: Sequence[tuple[object, ...]]) -> FittedRows:
    """``rows`` (each the tuple of the values of ``columns``) as ``table`` can hold them: each
    text as :func:`fitted_text` makes it, as :func:`fitted` does for one mapping.

    Checked a column of the batch at a time, without a call per value: a column of texts
    (and None) that, joined, are ASCII without NUL, none longer than the column, is kept as
    it is; a column holding no text at all is kept; any other column (something to escape or
    cut, a ``str`` subclass, texts among other values) has each of its texts fitted."""
    if not rows:
        return FittedRows()
    lengths = _lengths(table)
    values = list(zip(*rows, strict=True))
    changed = False
    for position, (name, column) in enumerate(zip(columns, values, strict=True)):
        kinds = set(map(type, column))
        length = lengths.get(name)
        if kinds <= _PLAIN_KINDS:
            texts = column if _NONE not in kinds else tuple(filter(None, column))
            joined = "".join(texts)
            if (
                joined.isascii()
                and "\x00" not in joined
                and (length is None or len(joined) <= length or max(map(len, texts)) <= length)
            ):
                continue
        elif not any(issubclass(kind, str) for kind in kinds):
            continue
        fitted_column = tuple([fitted_text(v, length) if isinstance(v, str) else v for v in column])
        if fitted_column != column:  # non-ASCII text that is stored as it is changes nothing
            values[position] = fitted_column
            changed = True
    return FittedRows(zip(*values, strict=True) if changed else rows)


def _as_tuples(columns: tuple[str, ...], rows: Sequence[Mapping[str, object]]) -> list[tuple[object, ...]]:
    if len(columns) == 1:
        (name,) = columns
        return [(row[name],) for row in rows]
    return list(map(operator.itemgetter(*columns), rows))


def upsert_rows(
    conn: Connection,
    table: Table,
    key_columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
) -> None:
    """:func:`upsert_values` of mappings (all naming the same columns)."""
    if rows:
        columns = tuple(rows[0])
        upsert_values(conn, table, columns, key_columns, _as_tuples(columns, rows), nullable_key=nullable_key)


def upsert_values(
    conn: Connection,
    table: Table,
    columns: tuple[str, ...],
    key_columns: Sequence[str],
    rows: Sequence[tuple[object, ...]],
    *,
    nullable_key: bool = False,
) -> None:
    """Insert each row (the tuple of the values of ``columns``), or update the row with its
    key; the last row wins for a repeated key.  Every row is fitted first (:func:`fitted_batch`).

    The key columns must carry a unique constraint.  On PostgreSQL and SQLite this is one
    batched ``INSERT ... ON CONFLICT (key) DO UPDATE``; a key with a nullable column
    (``nullable_key``; NULLs never conflict) takes the portable update-else-insert path.
    """
    if not rows:
        return
    fitted_rows = fitted_batch(table, columns, rows)
    key = operator.itemgetter(*(columns.index(name) for name in key_columns))
    latest = dict(zip(map(key, fitted_rows), fitted_rows, strict=True))
    if len(latest) < len(fitted_rows):
        fitted_rows = FittedRows(latest.values())
    if not nullable_key and conn.dialect.name in ("postgresql", "sqlite"):
        driver = _driver_statement(conn.dialect, table, columns, tuple(key_columns))
        if driver is not None:
            driver.execute(conn, fitted_rows)
            return
        upsert = _upsert_statement(conn.dialect.name, table, columns, tuple(key_columns))
        for chunk in _chunks(fitted_rows):
            conn.execute(upsert, [dict(zip(columns, row, strict=True)) for row in chunk])
        return
    for values in fitted_rows:
        row = dict(zip(columns, values, strict=True))
        key_values = {name: row[name] for name in key_columns}
        updates = {name: value for name, value in row.items() if name not in key_columns}
        clause = _key_clause(table, key_values)
        if updates:
            if conn.execute(update(table).where(clause).values(updates)).rowcount > 0:
                continue
        elif conn.execute(select(table.c.id).where(clause)).first() is not None:
            continue
        conn.execute(insert(table).values(row))


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
    """:func:`insert_values` of mappings (all naming the same columns)."""
    if rows:
        columns = tuple(rows[0])
        insert_values(conn, table, columns, _as_tuples(columns, rows))


def insert_values(
    conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]]
) -> None:
    """Insert the rows (each the tuple of the values of ``columns``), fitted
    (:func:`fitted_batch`): through the driver's ``executemany`` of a cached statement where
    it can (:func:`_driver_statement`), else ``conn.execute(insert(table), rows)``."""
    if not rows:
        return
    fitted_rows = fitted_batch(table, columns, rows)
    driver = _driver_statement(conn.dialect, table, columns, None)
    if driver is not None:
        driver.execute(conn, fitted_rows)
        return
    conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in fitted_rows])


def _upsert_statement(
    dialect_name: str, table: Table, columns: tuple[str, ...], key_columns: tuple[str, ...]
) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` of ``columns`` (DO NOTHING when every column
    is a key column) on PostgreSQL or SQLite."""
    statement = (postgresql_insert if dialect_name == "postgresql" else sqlite_insert)(table)
    updates = {name: statement.excluded[name] for name in columns if name not in key_columns}
    keys = [table.c[name] for name in key_columns]
    return (
        statement.on_conflict_do_update(index_elements=keys, set_=updates)
        if updates
        else statement.on_conflict_do_nothing(index_elements=keys)
    )


@attrs.frozen
class _DriverStatement:
    """A compiled statement with positional parameters, run by the driver's ``executemany``
    (``Connection.exec_driver_sql``: the engine's events still run).  SQLAlchemy's ``execute``
    of an ``executemany`` builds each row's parameters from the compiled statement's bind
    names in Python (``construct_params``: a dict per row, then the positional list); here the
    batch's rows are the tuples of the values of ``columns``, put in the statement's order
    and passed through the type's bind processor (``Float``, ``DateTime`` on SQLite) a column
    at a time."""

    sql: str
    columns: tuple[str, ...]
    """The columns of the rows given to :meth:`execute`, in their order."""
    names: tuple[str, ...]
    """The statement's parameters, in their order."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    """The bind processor of each name, None where its type has none."""

    def execute(self, conn: Connection, rows: FittedRows) -> None:
        if self.names != self.columns or any(self.processors):
            by_name = dict(zip(self.columns, zip(*rows, strict=True), strict=True))
            values = [
                by_name[name] if process is None else tuple(map(process, by_name[name]))
                for name, process in zip(self.names, self.processors, strict=True)
            ]
            rows = FittedRows(zip(*values, strict=True))
        for chunk in _chunks(rows):
            conn.exec_driver_sql(self.sql, FittedRows(chunk))  # a slice is a plain list


def _positional_dialect(dialect: Dialect) -> Dialect | None:
    """The dialect to compile a statement with positional parameters for ``dialect``'s
    driver: ``dialect`` itself when its parameters are SQLite's ``?``; for
    psycopg, whose dialect binds by name (``%(name)s``) though psycopg takes ``%s`` as well,
    a copy of it (its server's version and settings kept) binding ``%s``; None for any other."""
    if dialect.paramstyle == "qmark":
        return dialect
    if dialect.driver != "psycopg" or dialect.paramstyle != "pyformat":
        return None
    positional = copy.copy(dialect)
    positional.paramstyle, positional.positional = "format", True
    return positional


@functools.lru_cache(maxsize=256)
def _driver_statement(
    dialect: Dialect, table: Table, columns: tuple[str, ...], key_columns: tuple[str, ...] | None
) -> _DriverStatement | None:
    """The insert (``key_columns`` None) or upsert of ``columns`` compiled once for
    ``dialect``, when its driver takes positional parameters (:func:`_positional_dialect`)
    and the statement binds exactly ``columns`` (no Python-side column default or
    ``onupdate``, no RETURNING); else None, and the rows go through ``Connection.execute``."""
    positional = _positional_dialect(dialect)
    if positional is None:
        return None
    statement = (
        insert(table) if key_columns is None else _upsert_statement(dialect.name, table, columns, key_columns)
    )
    compiled = statement.compile(dialect=positional, column_keys=list(columns), for_executemany=True)
    names = tuple(compiled.positiontup or ())
    if sorted(names) != sorted(columns) or compiled.effective_returning:
        return None
    processors = compiled._bind_processors
    found = tuple(processors.get(name) for name in names)
    usable = tuple(process if callable(process) else None for process in found)
    if usable != found:
        return None  # a per-element processor (an expanded tuple parameter): SQLAlchemy's own path
    return _DriverStatement(compiled.string, columns, names, usable)


def delete_rows(
    conn: Connection, table: Table, keys: Sequence[Mapping[str, object]], *, nullable_key: bool = False
) -> None:
    """Delete the rows with these keys (all mappings name the same columns); missing keys are
    ignored.  Batched as ``(k1, k2) IN (...)`` unless a key column may be NULL."""
    if not keys:
        return
    if nullable_key:
        for key in keys:
            conn.execute(sql_delete(table).where(_key_clause(table, key)))
        return
    names = list(keys[0])
    columns = [table.c[name] for name in names]
    target = columns[0] if len(columns) == 1 else tuple_(*columns)
    for chunk in _chunks(keys):
        values = (
            [key[names[0]] for key in chunk]
            if len(columns) == 1
            else [tuple(key[n] for n in names) for key in chunk]
        )
        conn.execute(sql_delete(table).where(target.in_(values)))


def delete_keys(
    engine: Engine,
    table: Table,
    keys: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
    directory: bool = False,
) -> None:
    """Delete the rows with these keys in a transaction of their own (``directory``: a change
    of the directory, which bumps its marker)."""
    if keys:
        with engine.begin() as conn:
            delete_rows(conn, table, keys, nullable_key=nullable_key)
            if directory:
                bump_directory_generation(conn)


def upsert(
    engine: Engine,
    table: Table,
    key_columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
    *,
    nullable_key: bool = False,
    directory: bool = False,
) -> None:
    """Upsert the rows in a transaction of their own (``directory``: a change of the
    directory, which bumps its marker)."""
    if rows:
        with engine.begin() as conn:
            upsert_rows(conn, table, key_columns, rows, nullable_key=nullable_key)
            if directory:
                bump_directory_generation(conn)


# -- the directory's change marker -------------------------------------------------------


def bump_directory_generation(conn: Connection) -> None:
    """Count one change of the directory, in the caller's transaction (the row is created
    when a schema made without the migrations lacks it)."""
    t = tables.directory_generation
    changed = conn.execute(update(t).where(t.c.id == 1).values(generation=t.c.generation + 1))
    if changed.rowcount == 0:
        conn.execute(insert(t).values(id=1, generation=1))
