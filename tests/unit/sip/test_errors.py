from __future__ import annotations

import pytest

from scaserver.sip import errors
from scaserver.sip.message import Headers, Request

STATUSES = [
    (errors.MalformedMessage, 400, "Bad Request"),
    (errors.BadRequest, 400, "Bad Request"),
    (errors.Unauthorized, 401, "Unauthorized"),
    (errors.Forbidden, 403, "Forbidden"),
    (errors.NotFound, 404, "Not Found"),
    (errors.MethodNotAllowed, 405, "Method Not Allowed"),
    (errors.UnsupportedUriScheme, 416, "Unsupported URI Scheme"),
    (errors.BadExtension, 420, "Bad Extension"),
    (errors.IntervalTooBrief, 423, "Interval Too Brief"),
    (errors.TemporarilyUnavailable, 480, "Temporarily Unavailable"),
    (errors.CallDoesNotExist, 481, "Call/Transaction Does Not Exist"),
    (errors.TooManyHops, 483, "Too Many Hops"),
    (errors.BadEvent, 489, "Bad Event"),
    (errors.ServerInternalError, 500, "Server Internal Error"),
    (errors.NotImplementedMethod, 501, "Not Implemented"),
    (errors.VersionNotSupported, 505, "Version Not Supported"),
    (errors.MessageTooLarge, 513, "Message Too Large"),
    (errors.StreamMalformed, 400, "Bad Request"),
    (errors.StreamTooLarge, 513, "Message Too Large"),
]


@pytest.mark.parametrize(("cls", "status", "reason"), STATUSES)
def test_each_error_class_carries_its_status_and_reason(
    cls: type[errors.SipError], status: int, reason: str
) -> None:
    error = cls("detail")
    assert (error.status, error.reason, error.detail, str(error)) == (status, reason, "detail", "detail")
    assert error.headers == Headers.EMPTY


def test_error_carries_the_headers_its_response_needs() -> None:
    unsupported = Headers.of(("Unsupported", "foo"))
    assert errors.BadExtension("no foo", headers=unsupported).headers == unsupported


def test_malformed_message_carries_the_partial_request() -> None:
    partial = Request("OPTIONS", "sip:a@b")
    assert errors.MalformedMessage("x", partial=partial).partial is partial
    assert errors.MalformedMessage("x").partial is None


def test_framing_errors_are_sip_errors_and_framing_errors() -> None:
    assert isinstance(errors.StreamMalformed("x"), errors.MalformedMessage)
    assert isinstance(errors.StreamMalformed("x"), errors.FramingError)
    assert isinstance(errors.StreamTooLarge("x"), errors.MessageTooLarge)
    assert isinstance(errors.StreamTooLarge("x"), errors.FramingError)


def test_protocol_state_error_is_not_a_sip_error() -> None:
    assert not issubclass(errors.ProtocolStateError, errors.SipError)


def test_subclass_without_status_inherits_it() -> None:
    class Busy(errors.TemporarilyUnavailable):
        pass

    assert (Busy.status, Busy.reason) == (480, "Temporarily Unavailable")
