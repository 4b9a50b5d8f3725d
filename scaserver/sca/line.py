"""Shared lines (sca.md section 1): the address-of-record several members share.

A line is named by its canonical AoR (``sip:user@host[:port]``, host in lower
case, default port dropped, parameters dropped).  A provisioned line carries
its number of appearances and the members allowed on it; a line that appears
on the fly (an AoR that gets a ``call-info`` subscription, section 3.6) has the
engine's defaults.

Who may subscribe to a line (``call-info`` and ``line-seize``, 3.2 row 6) is
:meth:`SharedLine.lists`: a listed member, or the AoR's own user (checked by
the engine).  An empty member list lists nobody, so a line provisioned without
members, and an AoR that is no provisioned line, are for their own user only.
"""

from __future__ import annotations

import functools

import attrs

from scaserver.sip.errors import MalformedMessage
from scaserver.sip.uri import SipUri, parse_uri


@functools.lru_cache(maxsize=4096)
def canonical_aor(uri_text: str) -> str | None:
    """The canonical AoR of a URI (sca.md section 1), or None when it is not a usable SIP URI.

    Remembered for the last 4096 texts: a call's From, To and Contacts are mapped several
    times per request, each a URI parse and an AoR written out."""
    try:
        uri = parse_uri(uri_text.strip())
    except MalformedMessage:
        return None
    if not isinstance(uri, SipUri) or uri.user is None:
        return None
    return uri.aor()


def side_aor(uri_text: str, contact_text: str | None) -> str | None:
    """The canonical AoR of one side of a message (sca.md section 1).

    ``uri_text`` is the From URI of a request or the To URI of a response;
    ``contact_text`` the message's Contact URI.  When the Contact user differs
    from the From/To user, the line is ``sip:<Contact user>@<From/To host>``
    (Polycom lines registered with a separate line user); otherwise it is the
    canonical From/To URI.
    """
    try:
        uri = parse_uri(uri_text.strip())
    except MalformedMessage:
        return None
    if not isinstance(uri, SipUri) or uri.user is None:
        return None
    if contact_text is not None:
        try:
            contact = parse_uri(contact_text.strip())
        except MalformedMessage:
            contact = None
        if isinstance(contact, SipUri) and contact.user and contact.user != uri.user:
            return attrs.evolve(uri, user=contact.user).aor()
    return uri.aor()


def host_part(aor: str) -> str:
    """The ``host[:port]`` of a canonical AoR: everything after the ``@`` (5.1 line-host)."""
    return aor.rpartition("@")[2] if "@" in aor else aor.partition(":")[2]


@attrs.frozen
class SharedLine:
    """One shared line: its canonical AoR, how many appearances it has (0 = unlimited)
    and the members allowed on it (digest user names or canonical contact AoRs;
    empty = anybody, the compatible default of sca.md 3.2 row 6)."""

    aor: str
    appearances: int = 0
    members: frozenset[str] = frozenset()
    push_members: bool = False  # push-and-parking.md 6.11: calls also wake members' mobiles

    def member_aors(self) -> tuple[str, ...]:
        """The members as canonical AoRs (push-and-parking.md 6.11): an AoR as it is, a
        ``user@domain`` with ``sip:`` added, a bare user name in the line's own domain."""
        found: set[str] = set()
        for member in self.members:
            if member.startswith(("sip:", "sips:")):
                text = member
            elif "@" in member:
                text = f"sip:{member}"
            else:
                text = f"sip:{member}@{host_part(self.aor)}"
            aor = canonical_aor(text)
            if aor is not None and aor != self.aor:
                found.add(aor)
        return tuple(sorted(found))

    def admits(self, *, user: str | None = None, contact: str | None = None) -> bool:
        """Whether a subscriber may use this line (sca.md 3.2 row 6): an authenticated user
        name, or the canonical AoR of a contact URI, that is listed among the members."""
        if not self.members:
            return True
        if user is not None and user in self.members:
            return True
        if contact is not None:
            contact_aor = canonical_aor(contact)
            if contact_aor is not None and contact_aor in self.members:
                return True
            if contact in self.members:
                return True
        return False

    def lists(self, *, user: str | None = None, aor: str | None = None) -> bool:
        """Whether an authenticated user name, or a canonical AoR (the From of a subscriber
        that is not authenticated), is listed among the members; an empty list lists nobody."""
        if user is not None and user in self.members:
            return True
        return aor is not None and (aor in self.members or aor in self.member_aors())

    def allows_index(self, index: int) -> bool:
        """Whether ``index`` is within 1..appearances (any index >= 1 when unlimited)."""
        return index >= 1 and (self.appearances <= 0 or index <= self.appearances)


@attrs.frozen
class LineAlias:
    """Another name of a shared line (sca.md Q26): a number or URI (``sip:100@example.com``,
    a DID at a gateway's domain) that requests and subscriptions reach the line by.  Both
    are canonical AoRs; ``line`` is never itself an alias."""

    alias: str
    line: str
