"""What reaches the database: escaped text (``store.engine.stored_text``), the split between
faults of the rows and faults of the database (``is_row_fault``), keys shown with tokens
hashed (``store.repository``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import exc

from scaserver.push.pnparams import token_hash
from scaserver.registrar.binding import BindingKey, KeyKind
from scaserver.store import tables
from scaserver.store.engine import _before_cursor_execute, is_row_fault, stored_text
from scaserver.store.registrations import ruid
from scaserver.store.repository import binding_key_text, token_key_text
from scaserver.store.writes import fitted


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("Phone", "Phone"),
        ("Téléphone ☎", "Téléphone ☎"),
        (b"Phone\xff".decode("utf-8", "surrogateescape"), "Phone\\xff"),
        (b"\x80\xfe\xc3".decode("utf-8", "surrogateescape"), "\\x80\\xfe\\xc3"),
        ("a\x00b", "a\\x00b"),
        ("x\ud800y", "x\\ud800y"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_stored_text(value: str, stored: str) -> None:
    assert stored_text(value) == stored


@given(st.binary(max_size=64))
def test_stored_text_of_any_octets_is_valid_utf8_without_nul(data: bytes) -> None:
    stored = stored_text(data.decode("utf-8", "surrogateescape"))
    assert "\x00" not in stored
    stored.encode("utf-8")  # never raises


@given(st.text())
def test_stored_text_keeps_valid_text_without_nul(text: str) -> None:
    if "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert stored_text(text) == text


def _dbapi(kind: type[exc.DBAPIError], *, invalidated: bool = False) -> exc.DBAPIError:
    return kind("INSERT ...", None, Exception("boom"), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        _dbapi(exc.DataError),
        _dbapi(exc.IntegrityError),
        exc.StatementError("bind failed", "INSERT ...", None, TypeError("bad")),
        UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
        ValueError("bad key"),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
    ],
)
def test_faults_of_the_rows(error: BaseException) -> None:
    assert is_row_fault(error)


@pytest.mark.parametrize(
    "error",
    [
        _dbapi(exc.OperationalError),
        _dbapi(exc.InterfaceError),
        _dbapi(exc.ProgrammingError),  # a table missing: the schema, not the row
        _dbapi(exc.DataError, invalidated=True),
        exc.DisconnectionError("gone"),
        exc.TimeoutError("pool"),
        ConnectionRefusedError(),
        OSError("disk"),
        RuntimeError("anything else"),
    ],
)
def test_faults_of_the_database(error: BaseException) -> None:
    assert not is_row_fault(error)


def test_ruid_of_a_contact_with_octets_that_are_not_utf8() -> None:
    contact = b"<sip:a@192.0.2.1;x=\xff>".decode("utf-8", "surrogateescape")
    assert len(ruid(BindingKey("sip:a@example.com", KeyKind.URI, contact))) == 64


def test_binding_key_text_hashes_push_tokens() -> None:
    push = BindingKey("sip:a@example.com", KeyKind.PUSH, "apns TOKEN123 ABCD.com.example.voip")
    assert binding_key_text(push) == (
        f"sip:a@example.com push apns [sha256:{token_hash('TOKEN123')[:12]}] ABCD.com.example.voip"
    )
    contact = BindingKey("sip:a@example.com", KeyKind.URI, "sip:a@192.0.2.1;pn-provider=fcm;pn-prid=TOKEN123")
    shown = binding_key_text(contact)
    assert "TOKEN123" not in shown
    assert "pn-provider=fcm" in shown
    assert "TOKEN123" not in token_key_text(("fcm", "TOKEN123"))


_CELLS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8).map(lambda data: data.decode("utf-8", "surrogateescape")),
)


@given(st.lists(st.lists(_CELLS, min_size=1, max_size=5), max_size=6), st.booleans())
def test_every_string_of_a_batch_reaches_the_database_stored(rows: list[list[object]], named: bool) -> None:
    # A batch all of storable text is passed on as it is; any other has each string escaped.
    batch: list[dict[str, object] | tuple[object, ...]] = [
        {f"c{i}": value for i, value in enumerate(row)} if named else tuple(row) for row in rows
    ]
    _, sent = _before_cursor_execute(None, None, "INSERT", batch, None, True)

    def stored(value: object) -> object:
        return stored_text(value) if isinstance(value, str) else value

    expected = [
        {name: stored(value) for name, value in row.items()}
        if isinstance(row, dict)
        else tuple(stored(value) for value in row)
        for row in batch
    ]
    assert list(sent) == expected


def test_a_fitted_row_is_copied_only_when_something_in_it_changes() -> None:
    clean: dict[str, object] = {"ruid": "r" * 64, "aor": "sip:200@example.com", "cseq": 1}
    assert fitted(tables.location, clean) is clean
    dirty: dict[str, object] = {"ruid": "r" * 64, "user_agent": "Phone\udcff", "cseq": 1}
    out = fitted(tables.location, dirty)
    assert out == {"ruid": "r" * 64, "user_agent": "Phone\\xff", "cseq": 1}
    assert dirty["user_agent"] == "Phone\udcff"  # the caller's row is left alone
    too_long = {"ruid": "r" * 65}
    assert fitted(tables.location, too_long) == {"ruid": "r" * 64}
