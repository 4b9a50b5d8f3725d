"""Role-independent checks a UAS or proxy makes before acting on a request.

RFC 3261 sections 8.1.1 (mandatory headers), 8.2.2 (version), 16.3 (request
validation), 20 (single-valued headers) and RFC 4475 section 3.  Faults that
depend on the role (416 for the scheme, 420 for extensions, 483 for
Max-Forwards, 404/501) are decided by the dispatcher and engines, using
:func:`unsupported_options` and :func:`scaserver.sip.headers.max_forwards`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from scaserver.sip import headers
from scaserver.sip.errors import BadRequest, MalformedMessage, VersionNotSupported
from scaserver.sip.message import SIP_VERSION, Headers, Request, Response, split_list
from scaserver.sip.uri import SipUri, parse_name_addr, parse_uri

MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")
"""Headers every request needs (RFC 3261 8.1.1; a missing Max-Forwards is an RFC 2543 peer)."""

SINGLE_VALUED: Final = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type", "Expires")
"""Headers that may appear once only (RFC 3261 section 7.3.1, RFC 4475 3.3.8)."""


def _read_lines(present: Headers) -> tuple[dict[str, str], set[str] | None]:
    """One pass over the header lines: the first value of each (canonical) name, and the
    names that appear more than once (None when none does, the usual message)."""
    first: dict[str, str] = {}
    repeated: set[str] | None = None
    for name, value in present.fields:
        if name not in first:
            first[name] = value
        elif repeated is None:
            repeated = {name}
        else:
            repeated.add(name)
    return first, repeated


def _items(present: Headers, name: str, first: str, repeated: set[str] | None) -> list[str]:
    """Every element of the lines of list header ``name``, whose first line is ``first``
    (the only one, the usual case, when ``name`` is not repeated)."""
    if repeated is None or name not in repeated:
        return split_list(first)
    return [item for line_name, line in present.fields if line_name == name for item in split_list(line)]


def check_request(request: Request) -> tuple[headers.Via, headers.CSeq]:
    """Raise the SipError owed for a request no role may act on; otherwise return its top
    Via and CSeq, parsed here (what its server transaction is keyed by, 17.2.3).

    - a version other than SIP/2.0: 505 (8.2.2, RFC 4475 3.1.2.16);
    - a Request-URI that is no URI, or a SIP URI with escaped headers: 400
      (19.1.1 table: headers are not allowed in a Request-URI; RFC 4475 3.1.2.7, 3.1.2.11);
    - a missing or repeated From, To, Call-ID, CSeq, a missing Via: 400 (RFC 4475 3.3.1, 3.3.8);
    - unparsable Via (every hop), From, To, CSeq, Contact, Max-Forwards: 400;
    - a CSeq over 2**32-1 or whose method differs from the request's: 400 (RFC 4475 3.1.2.4, 3.1.2.17);
    - a top Via branch that is the bare magic cookie: 400 (RFC 4475 3.2.1).

    The header lines are read in one pass: the first value of each name and the names
    repeated; each value is then parsed once from what that pass kept (the lines of a
    repeated Via or Contact are gathered again, which the usual request never needs).
    """
    if request.version != SIP_VERSION:
        raise VersionNotSupported(f"SIP version {request.version}")
    uri = parse_uri(request.uri)
    if type(uri) is SipUri and uri.headers:
        raise BadRequest("escaped headers in the Request-URI")
    present = request.headers
    first, repeated = _read_lines(present)
    for name in MANDATORY:
        if name not in first:
            raise BadRequest(f"missing {name}")
    if repeated is not None:
        for name in SINGLE_VALUED:
            if name in repeated:
                raise BadRequest(f"more than one {name}")
    via_items = _items(present, "Via", first["Via"], repeated)
    if not via_items:
        raise MalformedMessage("empty Via")
    top = headers.parse_via(via_items[0])
    for item in via_items[1:]:  # every hop must parse (RFC 5118 section 4.7)
        headers.parse_via(item)
    branch = top.branch
    if branch is not None and branch == headers.BRANCH_MAGIC_COOKIE:
        raise BadRequest("top Via branch is the bare magic cookie")
    parse_name_addr(first["From"])
    parse_name_addr(first["To"])
    if not first["Call-ID"]:
        raise BadRequest("empty Call-ID")
    sequence = headers.parse_cseq(first["CSeq"])
    if sequence.method != request.method:
        raise BadRequest(f"CSeq method {sequence.method} does not match {request.method}")
    if "Max-Forwards" in first:
        headers.parse_max_forwards(first["Max-Forwards"])
    if "Contact" in first:
        contact_items = _items(present, "Contact", first["Contact"], repeated)
        if len(contact_items) == 1 and contact_items[0].strip(" \t") != "*":
            headers.parse_contact(contact_items[0])  # parse_contacts of one name-addr
        else:
            headers.parse_contacts(contact_items)
    return top, sequence


def check_response(response: Response) -> tuple[headers.Via, headers.CSeq]:
    """Raise MalformedMessage for a response that must be dropped, not forwarded or matched;
    return its top Via and CSeq, parsed here (what it is matched to a transaction by, 17.1.3).

    A response needs a parsable top Via (where it goes, 18.1.2), and a usable
    CSeq, From, To and Call-ID to match a transaction (17.1.3): RFC 4475
    3.1.2.5 (CSeq over 2**32-1) and 3.1.2.19 (status over 699, refused by the parser).
    """
    present = response.headers
    first, repeated = _read_lines(present)
    for name in ("From", "To", "Call-ID", "CSeq"):
        if name not in first or (repeated is not None and name in repeated):
            raise MalformedMessage(f"response without exactly one {name}")
    via = _top_via(present, first, repeated)
    sequence = headers.parse_cseq(first["CSeq"])
    parse_name_addr(first["From"])
    parse_name_addr(first["To"])
    return via, sequence


def _top_via(present: Headers, lines: dict[str, str], repeated: set[str] | None) -> headers.Via:
    """The first Via value of the lines, parsed (:func:`scaserver.sip.headers.top_via`);
    ``lines`` holds the first line of each name."""
    if "Via" not in lines:
        raise MalformedMessage("missing Via")
    items = split_list(lines["Via"])
    if items:
        return headers.parse_via(items[0])
    if repeated is not None and "Via" in repeated:
        for name, line in present.fields:
            if name == "Via":
                items = split_list(line)
                if items:
                    return headers.parse_via(items[0])
    raise MalformedMessage("missing Via")


def unsupported_options(request: Request, header_name: str, supported: Collection[str]) -> tuple[str, ...]:
    """The option tags of ``header_name`` (Require or Proxy-Require) not in ``supported``.

    Tags compare case-insensitively; each is listed once, in request order, for
    the Unsupported header of a 420 (RFC 3261 sections 8.2.2.3, 16.3 item 6,
    RFC 4475 3.3.5).
    """
    tags = request.headers.values(header_name)
    if not tags:  # the usual case: nothing required, no set of known tags to build
        return ()
    known = {tag.lower() for tag in supported}
    missing: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        lowered = tag.lower()
        if lowered not in known and lowered not in seen:
            seen.add(lowered)
            missing.append(tag)
    return tuple(missing)
