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
from scaserver.store.engine import FittedRows, _before_cursor_execute, is_row_fault, stored_text
from scaserver.store.registrations import ruid
from scaserver.store.repository import binding_key_text, token_key_text
from scaserver.store.writes import fitted, fitted_batch


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


class _Text(str):
    """A ``str`` subclass: fitted like any text."""


#: Columns of ``location`` of each kind: String(64), String(16), Text, Integer, Float.
_BATCH_COLUMNS = ("ruid", "key_kind", "contact", "cseq", "expires")

_BATCH_CELLS = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=10, max_size=80),  # ASCII, over 16
    st.binary(max_size=24).map(lambda data: data.decode("utf-8", "surrogateescape")),
    st.text(max_size=8).map(lambda text: f"a\x00{text}"),
    st.text(max_size=70).map(_Text),
)


@given(st.lists(st.tuples(*[_BATCH_CELLS] * len(_BATCH_COLUMNS)), max_size=6))
def test_a_batch_is_fitted_as_each_of_its_rows_is(rows: list[tuple[object, ...]]) -> None:
    # Column by column or value by value, the one rule: fitted_batch equals fitted row by row.
    sent = fitted_batch(tables.location, _BATCH_COLUMNS, rows)
    assert type(sent) is FittedRows
    assert sent == [
        tuple(fitted(tables.location, dict(zip(_BATCH_COLUMNS, row, strict=True))).values()) for row in rows
    ]


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("Phone\udcff", "Phone\\xff"),
        ("a\x00b", "a\\x00b"),
        ("x" * 20, "x" * 16),  # cut to String(16)
        ("é" * 20, "é" * 16),  # non-ASCII, cut
        ("\udcff" * 5, "\\xff\\xff\\xff\\xff"),  # escaped, then cut
        (_Text("kind"), "kind"),
        (None, None),
        (7, 7),  # not text: as it is
    ],
)
def test_a_batch_column_with_something_to_fit(value: object, stored: object) -> None:
    rows = [("r1", "contact"), ("r2", value)]
    sent = fitted_batch(tables.location, ("ruid", "key_kind"), rows)
    assert sent == [("r1", "contact"), ("r2", stored)]


def test_a_storable_batch_is_passed_on_as_it_is() -> None:
    rows = [("r" * 64, "contact", "<sip:a@192.0.2.1>", 1, 1.5), ("r2", None, "Téléphone", None, None)]
    sent = fitted_batch(tables.location, _BATCH_COLUMNS, rows)
    assert all(a is b for a, b in zip(sent, rows, strict=True))
    assert fitted_batch(tables.location, _BATCH_COLUMNS, []) == []


def test_a_fitted_batch_is_passed_on_unchecked_and_any_other_is_checked() -> None:
    fitted_rows = FittedRows([("ruid", "contact")])
    assert _before_cursor_execute(None, None, "INSERT", fitted_rows, None, True)[1] is fitted_rows
    plain = [("Phone\udcff", 1), ("ok", 2)]
    assert _before_cursor_execute(None, None, "INSERT", plain, None, True)[1] == [
        ("Phone\\xff", 1),
        ("ok", 2),
    ]
