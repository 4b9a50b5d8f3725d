"""Failures of SIP processing, each carrying the response it owes (RFC 3261 section 21).

A :class:`SipError` is a fault of the peer: the class says which final response
the fault earns (``status`` and ``reason``), and an instance may carry the
header fields that response MUST include (``Unsupported`` for 420, ``Allow`` for
405, ``Min-Expires`` for 423, ``Retry-After`` for 480/503...).
:func:`scaserver.sip.responses.response_for` is the one place an error becomes
a response.  :class:`ProtocolStateError` is different: it is our own misuse of
the core, a bug, and never becomes a response.
"""

from __future__ import annotations

from typing import ClassVar

from scaserver.sip.message import Headers, Request


class SipError(Exception):
    """A peer fault that a UAS or proxy answers with ``status`` (RFC 3261 section 21)."""

    status: ClassVar[int] = 500
    reason: ClassVar[str] = "Server Internal Error"

    def __init_subclass__(cls, *, status: int | None = None, reason: str | None = None, **kw: object) -> None:
        super().__init_subclass__(**kw)
        if status is not None:
            cls.status = status
        if reason is not None:
            cls.reason = reason

    def __init__(self, detail: str, *, headers: Headers = Headers.EMPTY) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class MalformedMessage(SipError, status=400, reason="Bad Request"):
    """Bytes or a header value that do not follow the RFC 3261 section 25 grammar.

    The parser raises nothing else.  ``partial`` holds the request as far as it
    was understood (start line plus the header lines read), so that a 400 can be
    sent when Via, From, To, Call-ID and CSeq are usable (RFC 3261 section 8.2).
    """

    def __init__(
        self, detail: str, *, headers: Headers = Headers.EMPTY, partial: Request | None = None
    ) -> None:
        super().__init__(detail, headers=headers)
        self.partial = partial


class BadRequest(SipError, status=400, reason="Bad Request"):
    """A well-formed request that breaks a rule of RFC 3261 (missing or repeated
    mandatory header, CSeq method mismatch, escaped headers in a Request-URI...)."""


class Unauthorized(SipError, status=401, reason="Unauthorized"):
    """Registrar/UAS challenge (RFC 3261 section 22.2); carries WWW-Authenticate."""


class Forbidden(SipError, status=403, reason="Forbidden"):
    """The server understood the request and refuses it (RFC 3261 section 21.4.4)."""


class NotFound(SipError, status=404, reason="Not Found"):
    """The user or resource does not exist here (RFC 3261 section 21.4.5)."""


class MethodNotAllowed(SipError, status=405, reason="Method Not Allowed"):
    """Method known but not allowed for this resource; MUST carry Allow (section 21.4.6)."""


class NotAcceptable(SipError, status=406, reason="Not Acceptable"):
    """No acceptable body can be produced for the Accept header (section 21.4.7)."""


class ProxyAuthenticationRequired(SipError, status=407, reason="Proxy Authentication Required"):
    """Proxy challenge (RFC 3261 section 22.3); carries Proxy-Authenticate."""


class RequestTimeout(SipError, status=408, reason="Request Timeout"):
    """No final response could be found in time (section 21.4.9)."""


class UnsupportedMediaType(SipError, status=415, reason="Unsupported Media Type"):
    """Body type, encoding or language not understood; carries Accept (section 21.4.13)."""


class UnsupportedUriScheme(SipError, status=416, reason="Unsupported URI Scheme"):
    """The Request-URI scheme is not one we serve (RFC 3261 sections 8.2.2.1, 21.4.14)."""


class BadExtension(SipError, status=420, reason="Bad Extension"):
    """Require/Proxy-Require lists options we lack; carries Unsupported (section 8.2.2.3)."""


class ExtensionRequired(SipError, status=421, reason="Extension Required"):
    """The request must use an extension listed in the Require of the answer (section 21.4.16)."""


class IntervalTooBrief(SipError, status=423, reason="Interval Too Brief"):
    """A registration or subscription expiry under the minimum; carries Min-Expires (section 10.3)."""


class TemporarilyUnavailable(SipError, status=480, reason="Temporarily Unavailable"):
    """The callee exists but cannot be reached now; may carry Retry-After (section 21.4.18)."""


class CallDoesNotExist(SipError, status=481, reason="Call/Transaction Does Not Exist"):
    """A request that matches no dialog or transaction (section 21.4.19)."""


class LoopDetected(SipError, status=482, reason="Loop Detected"):
    """The request came back to this proxy (RFC 3261 section 16.3 item 4)."""


class TooManyHops(SipError, status=483, reason="Too Many Hops"):
    """Max-Forwards reached zero on a request that would be forwarded (section 16.3 item 3)."""


class AddressIncomplete(SipError, status=484, reason="Address Incomplete"):
    """The Request-URI is incomplete (section 21.4.22)."""


class BusyHere(SipError, status=486, reason="Busy Here"):
    """The callee is busy at this end system (section 21.4.24)."""


class RequestTerminated(SipError, status=487, reason="Request Terminated"):
    """The request was cancelled by a CANCEL (section 9.2)."""


class NotAcceptableHere(SipError, status=488, reason="Not Acceptable Here"):
    """The session description is not acceptable here (section 21.4.26)."""


class BadEvent(SipError, status=489, reason="Bad Event"):
    """Unknown or unsupported event package; carries Allow-Events (RFC 6665 section 8.2.1)."""


class RequestPending(SipError, status=491, reason="Request Pending"):
    """A request arrived while one of ours is pending in the same dialog (RFC 3261 14.2)."""


class ServerInternalError(SipError, status=500, reason="Server Internal Error"):
    """Our own failure while handling a valid request; also a lower remote CSeq (12.2.2)."""


class NotImplementedMethod(SipError, status=501, reason="Not Implemented"):
    """A method we do not implement at all (RFC 3261 section 8.2.1); carries Allow."""


class ServiceUnavailable(SipError, status=503, reason="Service Unavailable"):
    """Temporary overload or maintenance; may carry Retry-After (section 21.5.4)."""


class VersionNotSupported(SipError, status=505, reason="Version Not Supported"):
    """A SIP version other than SIP/2.0 (RFC 3261 section 8.2.2 and 21.5.6)."""


class MessageTooLarge(SipError, status=513, reason="Message Too Large"):
    """A message larger than this server accepts (RFC 3261 section 21.5.7)."""


class Decline(SipError, status=603, reason="Decline"):
    """The callee declines (RFC 3261 section 21.6.2)."""


class FramingError(Exception):
    """A byte stream (TCP, TLS) lost its message boundaries: the connection must close.

    Every concrete framing error is also a :class:`SipError`
    (:class:`StreamMalformed` or :class:`StreamTooLarge`), so the edge may send
    its response before closing, when a start line was readable.
    """


class StreamMalformed(FramingError, MalformedMessage):
    """The header section or Content-Length of a streamed message cannot be read (RFC 3261 18.3)."""


class StreamTooLarge(FramingError, MessageTooLarge):
    """A streamed message exceeds the configured maximum size."""


class ProtocolStateError(Exception):
    """Our own misuse of a protocol object (a response into a terminated transaction).

    A bug, never a peer fault: it is not a SipError and never becomes a response.
    """
