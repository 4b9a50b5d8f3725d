"""Dialogs (RFC 3261 section 12): identity, state, route set, targets and CSeq rules.

A :class:`Dialog` is a frozen value; every change (a confirmed early dialog, a
remote target refresh, a request we send or receive) returns a new one.  A
:class:`DialogTable` holds the dialogs of one user agent core and answers 481
for requests that name a dialog it does not know (section 12.2.2).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Final

import attrs

from scaserver.sip.errors import BadRequest, CallDoesNotExist, ProtocolStateError, SipError
from scaserver.sip.headers import Star, contacts, cseq, from_addr, record_routes, to_addr, top_via
from scaserver.sip.message import Headers, Message, Request, Response
from scaserver.sip.uri import NameAddr, SipUri, Uri, parse_uri

TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Requests whose Contact replaces the remote target (RFC 3261 section 12.2, RFC 3311,
RFC 6665 section 4.1.2.1 and 4.2.2, RFC 3515)."""


class CSeqOutOfOrder(SipError, status=500, reason="Server Internal Error"):
    """An in-dialog request with a CSeq lower than the dialog's remote sequence number
    (RFC 3261 section 12.2.2)."""


@attrs.frozen
class DialogId:
    """Call-ID, local tag and remote tag (RFC 3261 section 12): the dialog's identity.

    A missing tag (an RFC 2543 peer) is the empty string.
    """

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The dialog a received request belongs to: local tag from To, remote tag from From
        (section 12.2.2)."""
        return cls(_call_id(request), to_addr(request).tag or "", from_addr(request).tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The dialog a response to our request belongs to: local tag from From, remote tag
        from To (section 12.1.2)."""
        return cls(_call_id(response), from_addr(response).tag or "", to_addr(response).tag or "")


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"


@attrs.frozen
class Dialog:
    """The dialog state of RFC 3261 section 12.

    ``local_party`` and ``remote_party`` are the From/To URIs of our requests
    without their tags; ``route_set`` is in the order our requests carry it;
    ``local_cseq`` is the CSeq number of the last request we sent (0 before the
    first one); ``remote_cseq`` is None while empty.
    """

    id: DialogId
    state: DialogState
    local_party: NameAddr
    remote_party: NameAddr
    remote_target: Uri
    route_set: tuple[NameAddr, ...]
    local_cseq: int
    remote_cseq: int | None
    secure: bool

    @classmethod
    def uas(cls, request: Request, response: Response, *, local_cseq: int = 0) -> Dialog:
        """The dialog our response creates (RFC 3261 section 12.1.1): a 2xx makes it
        confirmed, a 101-199 with a To tag early.

        Route set: the request's Record-Route in order; remote target: its Contact;
        remote CSeq: its CSeq; secure when it came over TLS for a SIPS Request-URI.
        ``local_cseq`` is the number before our first request in this dialog.
        """
        local_tag = to_addr(response).tag
        if local_tag is None or not 101 <= response.status < 300:
            raise ProtocolStateError(f"{response.status} without a To tag does not create a dialog")
        uri = parse_uri(request.uri)
        secure = isinstance(uri, SipUri) and uri.secure and top_via(request).transport == "TLS"
        return cls(
            id=DialogId(_call_id(request), local_tag, from_addr(request).tag or ""),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_party=to_addr(request).without_param("tag"),
            remote_party=from_addr(request).without_param("tag"),
            remote_target=_contact_uri(request),
            route_set=tuple(record_routes(request)),
            local_cseq=local_cseq,
            remote_cseq=cseq(request).number,
            secure=secure,
        )

    @classmethod
    def uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a response to our request creates (RFC 3261 section 12.1.2): a 2xx
        makes it confirmed, a 101-199 with a To tag early.

        Route set: the response's Record-Route reversed; remote target: its Contact;
        local CSeq: the request's; remote CSeq empty; secure for a SIPS Request-URI.
        """
        if not 101 <= response.status < 300:
            raise ProtocolStateError(f"a {response.status} response does not create a dialog")
        if to_addr(response).tag is None:
            raise BadRequest(f"{response.status} without a To tag does not create a dialog")
        uri = parse_uri(request.uri)
        return cls(
            id=DialogId.of_response(response),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_party=from_addr(request).without_param("tag"),
            remote_party=to_addr(response).without_param("tag"),
            remote_target=_contact_uri(response),
            route_set=tuple(reversed(record_routes(response))),
            local_cseq=cseq(request).number,
            remote_cseq=None,
            secure=isinstance(uri, SipUri) and uri.secure,
        )

    def on_request(self, request: Request) -> Dialog:
        """Apply a request received in this dialog (RFC 3261 section 12.2.2).

        A CSeq lower than the remote sequence number raises :class:`CSeqOutOfOrder`
        (500); otherwise it becomes the remote sequence number.  A target refresh
        request with a Contact replaces the remote target.
        """
        number = cseq(request).number
        if self.remote_cseq is not None and number < self.remote_cseq:
            raise CSeqOutOfOrder(f"CSeq {number} is lower than {self.remote_cseq} in dialog {self.id}")
        dialog = attrs.evolve(self, remote_cseq=number)
        if request.method in TARGET_REFRESH_METHODS and request.headers.get("Contact") is not None:
            dialog = attrs.evolve(dialog, remote_target=_contact_uri(request))
        return dialog

    def on_response(self, method: str, response: Response) -> Dialog:
        """Apply a response to a request we sent in this dialog (RFC 3261 sections 12.1.2,
        12.2.1.2 and 13.2.2.4).

        A 2xx confirms an early dialog and recomputes its route set from the 2xx; a 2xx
        to a target refresh request with a Contact replaces the remote target.
        """
        if not 200 <= response.status < 300:
            return self
        dialog = self
        if self.state is DialogState.EARLY:
            dialog = attrs.evolve(
                dialog,
                state=DialogState.CONFIRMED,
                route_set=tuple(reversed(record_routes(response))),
            )
        if method in TARGET_REFRESH_METHODS and response.headers.get("Contact") is not None:
            dialog = attrs.evolve(dialog, remote_target=_contact_uri(response))
        return dialog


def build_request(
    dialog: Dialog,
    method: str,
    *,
    contact: NameAddr | None = None,
    headers: Headers = Headers.EMPTY,
    body: bytes = b"",
) -> tuple[Dialog, Request]:
    """A request within ``dialog`` (RFC 3261 section 12.2.1.1) and the dialog after it.

    From and To carry the local and remote URIs and tags, Call-ID the dialog's,
    CSeq the local sequence number plus one (an ACK reuses the current number:
    section 13.2.2.4).  Request-URI and Route follow the route set: with no route
    set or a loose router (``lr``) first, the Request-URI is the remote target and
    the Route headers are the route set; with a strict router first, the
    Request-URI is that router's URI and the remote target is appended as the last
    Route.  ``headers`` (Contact excluded: pass ``contact``) are appended; the
    transaction layer adds the Via.
    """
    if method == "CANCEL":
        raise ProtocolStateError("a CANCEL is built from its INVITE by the transaction layer (section 9.1)")
    number = dialog.local_cseq if method == "ACK" else dialog.local_cseq + 1
    uri, routes = _request_target(dialog)
    fields: list[tuple[str, str]] = [("Route", str(route)) for route in routes]
    to = dialog.remote_party
    if dialog.id.remote_tag:
        to = to.with_param("tag", dialog.id.remote_tag)
    fields += [
        ("Max-Forwards", "70"),
        ("From", str(dialog.local_party.with_param("tag", dialog.id.local_tag))),
        ("To", str(to)),
        ("Call-ID", dialog.id.call_id),
        ("CSeq", f"{number} {method}"),
    ]
    if contact is not None:
        fields.append(("Contact", str(contact)))
    request = Request(method, str(uri), Headers.of(*fields).extend(headers.fields), body)
    return attrs.evolve(dialog, local_cseq=number), request


def _request_target(dialog: Dialog) -> tuple[Uri, tuple[NameAddr, ...]]:
    """Request-URI and Route values for a request in ``dialog`` (section 12.2.1.1)."""
    if not dialog.route_set:
        return dialog.remote_target, ()
    first = dialog.route_set[0]
    if isinstance(first.uri, SipUri) and first.uri.has_param("lr"):
        return dialog.remote_target, dialog.route_set
    # A strict router: its URI becomes the Request-URI, minus what a Request-URI may not
    # carry (section 19.1.1, Table 1: the method parameter and headers).
    uri = first.uri
    if isinstance(uri, SipUri):
        uri = uri.without_params("method").without_headers()
    return uri, (*dialog.route_set[1:], NameAddr(None, dialog.remote_target))


@attrs.define
class DialogTable:
    """The dialogs of one user agent core, by :class:`DialogId` (RFC 3261 section 12.2.2)."""

    _dialogs: dict[DialogId, Dialog] = attrs.field(init=False, factory=dict)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def find(self, request: Request) -> Dialog:
        """The dialog a received in-dialog request names; :class:`CallDoesNotExist` (481) if none."""
        dialog_id = DialogId.of_request(request)
        dialog = self._dialogs.get(dialog_id)
        if dialog is None:
            raise CallDoesNotExist(f"no dialog {dialog_id}")
        return dialog

    def put(self, dialog: Dialog) -> None:
        """Add a dialog or replace the one with the same id."""
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.pop(dialog_id, None)

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(tuple(self._dialogs.values()))


def _call_id(message: Message) -> str:
    call_id = message.headers.get("Call-ID")
    if call_id is None:
        raise BadRequest("missing Call-ID")
    return call_id


def _contact_uri(message: Message) -> Uri:
    """The URI of the single Contact a dialog-creating or target refresh message carries."""
    found = contacts(message)
    if isinstance(found, Star) or len(found) != 1:
        raise BadRequest("a dialog needs exactly one Contact URI (RFC 3261 section 12.1)")
    return found[0].uri
