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


def _read_lines(present: Headers) -> tuple[dict[str, str], set[str], list[str], list[str]]:
    """One pass over the header lines: the first value of each (canonical) name, the names
    that appear more than once, and every Via and every Contact line, in order."""
    first: dict[str, str] = {}
    repeated: set[str] = set()
    via_lines: list[str] = []
    contact_lines: list[str] = []
    for name, value in present.fields:
        if name in first:
            repeated.add(name)
        else:
            first[name] = value
        if name == "Via":
            via_lines.append(value)
        elif name == "Contact":
            contact_lines.append(value)
    return first, repeated, via_lines, contact_lines


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

    The header lines are read in one pass: how many of each name, the first value of each,
    and every Via and Contact line; each value is then parsed once from what that pass kept.
    """
    if request.version != SIP_VERSION:
        raise VersionNotSupported(f"SIP version {request.version}")
    uri = parse_uri(request.uri)
    if isinstance(uri, SipUri) and uri.headers:
        raise BadRequest("escaped headers in the Request-URI")
    first, repeated, via_lines, contact_lines = _read_lines(request.headers)
    for name in MANDATORY:
        if name not in first:
            raise BadRequest(f"missing {name}")
    if repeated:
        for name in SINGLE_VALUED:
            if name in repeated:
                raise BadRequest(f"more than one {name}")
    if len(via_lines) == 1:  # the usual request: one Via line, no list to gather
        via_items = split_list(via_lines[0])
    else:
        via_items = [item for line in via_lines for item in split_list(line)]
    if not via_items:
        raise MalformedMessage("empty Via")
    via_list = [headers.parse_via(item) for item in via_items]
    top = via_list[0]
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
    max_forwards = first.get("Max-Forwards")
    if max_forwards is not None:
        headers.parse_max_forwards(max_forwards)
    if len(contact_lines) == 1:
        headers.parse_contacts(split_list(contact_lines[0]))
    elif contact_lines:
        headers.parse_contacts([item for line in contact_lines for item in split_list(line)])
    return top, sequence


def check_response(response: Response) -> tuple[headers.Via, headers.CSeq]:
    """Raise MalformedMessage for a response that must be dropped, not forwarded or matched;
    return its top Via and CSeq, parsed here (what it is matched to a transaction by, 17.1.3).

    A response needs a parsable top Via (where it goes, 18.1.2), and a usable
    CSeq, From, To and Call-ID to match a transaction (17.1.3): RFC 4475
    3.1.2.5 (CSeq over 2**32-1) and 3.1.2.19 (status over 699, refused by the parser).
    """
    first, repeated, via_lines, _ = _read_lines(response.headers)
    for name in ("From", "To", "Call-ID", "CSeq"):
        if name not in first or name in repeated:
            raise MalformedMessage(f"response without exactly one {name}")
    via = _top_via(via_lines)
    sequence = headers.parse_cseq(first["CSeq"])
    parse_name_addr(first["From"])
    parse_name_addr(first["To"])
    return via, sequence


def _top_via(via_lines: list[str]) -> headers.Via:
    """The first Via value of these lines, parsed (:func:`scaserver.sip.headers.top_via`)."""
    for line in via_lines:
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
