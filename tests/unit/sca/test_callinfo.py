"""The Call-Info codec of sca.md section 5."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaserver.sca.appearance import AppearanceState
from scaserver.sca.callinfo import (
    MAX_INDEX,
    AppearanceInfo,
    CallInfo,
    CallInfoError,
    escape_quoted,
    strip_sca,
)
from scaserver.sip.message import Headers

URI = "sip:pbx.example.com"


def test_renders_the_spec_example() -> None:
    info = CallInfo(
        (
            AppearanceInfo(URI, 1, AppearanceState.ACTIVE, '"Carol" <sip:3001@pbx.example.com>'),
            AppearanceInfo(URI, 2, AppearanceState.HELD, "<sip:+15551230000@pbx.example.com>"),
            AppearanceInfo(URI, None, AppearanceState.IDLE),
        )
    )
    assert info.render() == (
        '<sip:pbx.example.com>;appearance-index=1;appearance-state=active;appearance-uri="\\"Carol\\" '
        '<sip:3001@pbx.example.com>",<sip:pbx.example.com>;appearance-index=2;appearance-state=held;'
        'appearance-uri="<sip:+15551230000@pbx.example.com>",<sip:pbx.example.com>;appearance-index=*;'
        "appearance-state=idle"
    )


def test_active_pending_is_written_as_active() -> None:
    assert AppearanceInfo(URI, 3, AppearanceState.ACTIVE_PENDING).render() == (
        "<sip:pbx.example.com>;appearance-index=3;appearance-state=active"
    )


def test_line_seize_value_has_only_the_index() -> None:
    assert AppearanceInfo(URI, 2).render() == "<sip:pbx.example.com>;appearance-index=2"


def test_lenient_parse_skips_non_sca_values_and_reads_every_line() -> None:
    lines = [
        "<http://example.com/icon.png>;purpose=icon, <sip:x>;answer-after=0",
        " < sips:pbx.example.com > ; Appearance-State = HELD-PRIVATE ; APPEARANCE-INDEX = 7 "
        ';appearance-uri="\\"B\\" <sip:b@h>"',
        "<sip:pbx.example.com>;appearance-index=8",
    ]
    info = CallInfo.parse(lines)
    assert info.entries == (
        AppearanceInfo("sips:pbx.example.com", 7, AppearanceState.HELD_PRIVATE, '"B" <sip:b@h>'),
        AppearanceInfo(URI, 8),
    )
    assert info.first() == info.entries[0]


def test_unknown_state_keeps_the_index() -> None:
    info = CallInfo.parse(["<sip:h>;appearance-index=2;appearance-state=bridge-active"])
    assert info.entries == (AppearanceInfo("sip:h", 2, None),)


def test_bare_uri_without_brackets_is_accepted() -> None:
    assert CallInfo.parse(["sip:h;appearance-index=4"]).entries == (AppearanceInfo("sip:h", 4),)


@pytest.mark.parametrize(
    "value",
    [
        "<sip:h>;appearance-index=abc",
        "<sip:h>;appearance-index=-1",
        "<sip:h>;appearance-index",
        f"<sip:h>;appearance-index={MAX_INDEX + 1}",
        "<sip:h;appearance-index=1",
        '<sip:h>;appearance-index=1;appearance-uri="unterminated',
    ],
)
def test_unreadable_index_is_an_error(value: str) -> None:
    with pytest.raises(CallInfoError):
        CallInfo.parse([value])


def test_no_sca_value_gives_nothing() -> None:
    assert CallInfo.parse(["<http://x/y.png>;purpose=icon"]).first() is None
    assert CallInfo.of(Headers.EMPTY).first() is None


def test_strip_keeps_non_sca_values() -> None:
    headers = Headers.of(
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
        ("Call-Info", "<sip:h>;appearance-index=1, <sip:x>;answer-after=0"),
        ("Call-Info", "<sip:h>;appearance-index=2;appearance-state=held"),
        ("Call-Info", "<sip:h>;appearance-index=x"),
    )
    assert strip_sca(headers) == Headers.of(
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Call-Info", "<sip:x>;answer-after=0")
    )
    plain = Headers.of(("Via", "x"))
    assert strip_sca(plain) is plain


_display = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_uri = st.from_regex(r"sips?:[a-z0-9]{1,8}@[a-z0-9.]{1,12}(:[0-9]{1,5})?", fullmatch=True)
_appearance_uri = st.one_of(
    st.none(),
    st.builds(lambda d, u: f"<{u}>" if not d else f'"{d}" <{u}>', _display, _uri),
)
_entry = st.builds(
    AppearanceInfo,
    uri=st.sampled_from(["sip:pbx.example.com", "sip:2001@pbx.example.com", "sips:h.example:5061"]),
    index=st.one_of(st.none(), st.integers(1, MAX_INDEX)),
    state=st.one_of(
        st.none(), st.sampled_from([s for s in AppearanceState if s is not AppearanceState.ACTIVE_PENDING])
    ),
    appearance_uri=_appearance_uri,
)


@given(st.lists(_entry, max_size=6))
def test_render_parse_round_trip(entries: list[AppearanceInfo]) -> None:
    info = CallInfo(tuple(entries))
    assert CallInfo.parse([info.render()]) == info


@given(st.text(alphabet=st.sampled_from(["a", "<", ">", " ", '"', "'", "\\", "é"])))
def test_escape_quoted_puts_a_backslash_before_each_quote_and_backslash(text: str) -> None:
    expected = "".join("\\" + char if char in "\"'\\" else char for char in text)
    assert escape_quoted(text) == expected


def test_escape_quoted_examples() -> None:
    assert escape_quoted('Bob "B" O\'Neil \\ x') == r"Bob \"B\" O\'Neil \\ x"
    assert escape_quoted("<sip:2001@example.com>") == "<sip:2001@example.com>"
