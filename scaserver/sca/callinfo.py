"""The SCA ``Call-Info`` header (sca.md section 5, BroadWorks SIP Access Side Extensions).

* :meth:`CallInfo.render` writes the grammar we emit (5.1): one header value
  list, entries sorted by index, parameters in the order index, state, uri.
* :meth:`CallInfo.parse` reads the grammar we accept (5.2): every header line
  and every comma-separated value, any URI in ``<>``, parameter names in any
  case and order, ``appearance-uri`` unquoted; values without
  ``appearance-index`` (``purpose=icon``, ``answer-after``) are not SCA and are
  skipped; an unknown ``appearance-state`` keeps the index and drops the state.
* :func:`strip_sca` removes SCA values and keeps the rest (5.3).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from scaserver.sca.appearance import WIRE_TOKENS, AppearanceState
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, split_list
from scaserver.sip.uri import read_quoted, split_params

#: The largest appearance-index accepted (it is stored in a 32-bit column, section 10).
MAX_INDEX: Final = 2**31 - 1

_INDEX: Final = "appearance-index"
_STATE: Final = "appearance-state"
_URI: Final = "appearance-uri"


class CallInfoError(ValueError):
    """A Call-Info value that names an appearance but cannot be read (sca.md 3.2 row 10)."""


def escape_quoted(text: str) -> str:
    """Backslash-escape ``"``, ``'`` and ``\\`` for the inside of a quoted appearance-uri (5.1):
    most texts (a bare ``<URI>``) have none and are returned as they are; others by three
    replacements in C, the backslashes first (not a call per character; ``str.translate``
    with a table is slower than either)."""
    if '"' not in text and "'" not in text and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


@attrs.frozen
class AppearanceInfo:
    """One SCA value of a Call-Info header.

    ``uri`` is the URI between ``<>`` (not the AoR, 5.1); ``index`` is the
    appearance-index, None for the ``*`` wildcard; ``state`` the
    appearance-state (None when absent or not one we know); ``appearance_uri``
    the unquoted appearance-uri content (``[display SP] <URI>``).
    """

    uri: str
    index: int | None
    state: AppearanceState | None = None
    appearance_uri: str | None = None

    def render(self) -> str:
        text = f"<{self.uri}>;{_INDEX}={'*' if self.index is None else self.index}"
        if self.state is not None:
            text += f";{_STATE}={WIRE_TOKENS[self.state]}"
        if self.appearance_uri is not None:
            text += f';{_URI}="{escape_quoted(self.appearance_uri)}"'
        return text


@attrs.frozen
class CallInfo:
    """The SCA values of a message's Call-Info header(s), in order."""

    entries: tuple[AppearanceInfo, ...] = ()

    def render(self) -> str:
        """The header value: every entry, comma-separated, on one line (5.1)."""
        return ",".join([entry.render() for entry in self.entries])  # a list: no generator

    def first(self) -> AppearanceInfo | None:
        """The first value with an appearance-index: the one a phone's request means (5.2)."""
        return self.entries[0] if self.entries else None

    @classmethod
    def parse(cls, lines: Iterable[str]) -> CallInfo:
        """Read the SCA values of the given Call-Info header lines (5.2).

        Raises :class:`CallInfoError` when a value carries ``appearance-index``
        but its index (or the value's syntax) cannot be read.
        """
        entries: list[AppearanceInfo] = []
        for line in lines:
            for value in split_list(line):
                entry = _parse_value(value)
                if entry is not None:
                    entries.append(entry)
        return cls(tuple(entries))

    @classmethod
    def of(cls, headers: Headers) -> CallInfo:
        return cls.parse(headers.lines("Call-Info"))


def _uri_and_params(value: str) -> tuple[str, str]:
    value = value.strip()
    if value.startswith("<"):
        close = value.find(">")
        if close < 0:
            raise CallInfoError(f"unterminated <URI> in Call-Info {value!r}")
        return value[1:close].strip(), value[close + 1 :]
    semicolon = value.find(";")
    if semicolon < 0:
        return value, ""
    return value[:semicolon].strip(), value[semicolon:]


def _parse_index(text: str | None) -> int | None:
    if text is None:
        raise CallInfoError("appearance-index without a value")
    if text == "*":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_INDEX:
        raise CallInfoError(f"appearance-index is not a number: {text!r}")
    return int(text)


def _unquote(text: str) -> str:
    if text.startswith('"'):
        try:
            content, after = read_quoted(text, 0)
        except MalformedMessage as error:
            raise CallInfoError(str(error)) from error
        if after != len(text):
            raise CallInfoError(f"junk after quoted appearance-uri {text!r}")
        return content
    return text


def _parse_value(value: str) -> AppearanceInfo | None:
    if _INDEX not in value.lower():
        return None
    uri, rest = _uri_and_params(value)
    try:
        params = split_params(rest)
    except MalformedMessage as error:
        raise CallInfoError(f"bad Call-Info parameters {value!r}") from error
    found: dict[str, str | None] = {}
    for name, param_value in params:
        found.setdefault(name.lower(), param_value)
    if _INDEX not in found:
        return None
    index = _parse_index(found[_INDEX])
    state_token = found.get(_STATE)
    state = None if state_token is None else AppearanceState.from_wire(state_token.strip('"'))
    uri_text = found.get(_URI)
    appearance_uri = None if uri_text is None else _unquote(uri_text)
    return AppearanceInfo(uri, index, state, appearance_uri)


def is_sca_value(value: str) -> bool:
    """True when a Call-Info value carries an ``appearance-index`` parameter (SCA format, 5.3)."""
    try:
        return _parse_value(value) is not None
    except CallInfoError:
        return True  # it names an appearance-index, even if unreadably


def strip_sca(headers: Headers) -> Headers:
    """Remove SCA-format Call-Info values and keep every other one (5.3: answer-after for intercom)."""
    if "Call-Info" not in headers:
        return headers
    fields: list[tuple[str, str]] = []
    for name, value in headers.fields:
        if name != "Call-Info":
            fields.append((name, value))
            continue
        kept = [item for item in split_list(value) if not is_sca_value(item)]
        if kept:
            fields.append((name, ", ".join(kept)))
    return Headers(tuple(fields))
