"""Building responses to requests (RFC 3261 section 8.2.6) and the one error -> response map."""

from __future__ import annotations

import re
from typing import Final

from scaserver.sip.errors import MalformedMessage, SipError
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.uri import parse_name_addr

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_COPIED: Final = ("Via", "From", "To", "Call-ID", "CSeq")
# The header lines a response copies, as sets (one hash per line of the request, not five
# comparisons): a 100 copies Timestamp as well.
_COPIED_NAMES: Final = frozenset(_COPIED)
_COPIED_BY_100: Final = _COPIED_NAMES | {"Timestamp"}


def default_reason(status: int) -> str:
    """The RFC 3261 section 21 reason phrase, or the class's generic one."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return REASON_PHRASES.get(status - status % 100, "Unknown")


def _has_tag(to_value: str) -> bool:
    try:
        return parse_name_addr(to_value).tag is not None
    except MalformedMessage:
        return ";tag=" in to_value.replace(" ", "").lower()


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    headers: Headers = Headers.EMPTY,
    to_tag: str | None = None,
    body: bytes = b"",
    detail: str | None = None,
    cause: str | None = None,
) -> Response:
    """A response to ``request`` per RFC 3261 section 8.2.6.2.

    Via (every value, in order), From, To, Call-ID and CSeq are copied; the To
    gets ``;tag=to_tag`` when a tag is given and the To has none.  A 100
    copies Timestamp as well (8.2.6.1).  ``headers`` are appended.  ``detail`` and
    ``cause`` (never sent) say why: for an error response without them, the reason
    phrase stands for both.
    """
    # A loop with an append per line copied: a comprehension and a second pass for the To
    # make 13 calls 6 but take longer (0.78 -> 1.04 us for a SUBSCRIBE's lines).
    fields: list[tuple[str, str]] = []
    copied = _COPIED_BY_100 if status == 100 else _COPIED_NAMES
    for name, value in request.headers.fields:
        if name not in copied:
            continue
        if name == "To" and to_tag is not None and not _has_tag(value):
            fields.append((name, f"{value};tag={to_tag}"))
        else:
            fields.append((name, value))
    fields += headers.fields
    phrase = reason if reason is not None else default_reason(status)
    if status >= 300:
        detail = detail if detail is not None else phrase
        cause = cause if cause is not None else cause_label(phrase)
    return Response(status, phrase, Headers(tuple(fields)), body, detail=detail, cause=cause)


def cause_label(text: str) -> str:
    """A bounded metrics label from a class name or a reason phrase: ``NotFound`` and
    ``Not Found`` both give ``not-found``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return "-".join(re.findall(r"[a-z0-9]+", words.lower())) or "unknown"


def response_for(request: Request, error: SipError, *, to_tag: str | None = None) -> Response:
    """The response a SipError earns: its status and reason, plus the headers it carries; the
    error's detail and class ride along for the refusal log line and metric."""
    return make_response(
        request,
        error.status,
        error.reason,
        headers=error.headers,
        to_tag=to_tag,
        detail=error.detail,
        cause=cause_label(type(error).__name__),
    )
