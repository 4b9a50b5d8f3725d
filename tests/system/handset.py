"""A simulated SCA handset for system tests: a small UDP SIP user agent over a real loopback
socket, built on the scaserver.sip message values, parser and serializer.

It does what a BroadWorks-style phone does against the server (sca.md sections 3, 4, 6, 7):
REGISTER, SUBSCRIBE ``call-info`` and ``line-seize`` (with digest authentication), answers
and records NOTIFYs, places calls (INVITE/ACK), holds them with a ``sendonly`` re-INVITE,
retrieves a held call with an INVITE carrying the appearance index (7.1), and hangs up.
The same class is the called party: it answers INVITEs (180/200), in-dialog requests and
INVITEs with Replaces (RFC 3891).

A reader thread answers NOTIFYs at once (200, or nothing for a handset that has "vanished")
and queues every other message; the test drives the handset with blocking calls that all
have a deadline.  Requests are retransmitted per RFC 3261 17.1 (T1 = 0.5 s) until answered.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs

from scaserver.sca.callinfo import CallInfo
from scaserver.sip import headers
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.message import Headers, Message, Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response
from scaserver.sip.serializer import serialize
from scaserver.sip.uri import parse_name_addr

T1 = 0.5
WAIT = 5.0


def sdp(port: int, direction: str = "sendrecv") -> bytes:
    """A one-stream audio offer/answer with the given direction attribute (RFC 3264 section 5.1)."""
    return (
        "v=0\r\n"
        f"o=- {port} 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        f"a={direction}\r\n"
    ).encode()


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex


@attrs.frozen
class Notify:
    """One NOTIFY the handset received (and answered)."""

    request: Request

    @property
    def event(self) -> str:
        return (self.request.headers.get("Event") or "").split(";")[0].strip().lower()

    @property
    def call_id(self) -> str:
        return self.request.call_id or ""

    @property
    def cseq(self) -> int:
        return headers.cseq(self.request).number

    @property
    def call_info(self) -> str:
        return ",".join(self.request.headers.lines("Call-Info"))

    @property
    def subscription_state(self) -> str:
        return self.request.headers.get("Subscription-State") or ""

    @property
    def terminated(self) -> bool:
        return self.subscription_state.lower().startswith("terminated")

    def appearances(self) -> dict[int | None, tuple[str | None, str | None]]:
        """index (None for ``*``) -> (appearance-state, appearance-uri) of every SCA value."""
        parsed = CallInfo.parse(self.request.headers.lines("Call-Info"))
        return {
            entry.index: (None if entry.state is None else entry.state.wire, entry.appearance_uri)
            for entry in parsed.entries
        }

    def state_of(self, index: int) -> str | None:
        """The state shown for ``index``: None when the index is not listed (idle by wildcard)."""
        return self.appearances().get(index, (None, None))[0]


@attrs.define
class Dialog:
    """One dialog as this handset sees it (RFC 3261 12): ids, target, route set, CSeq."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = attrs.field(factory=list)
    local_cseq: int = 1


@attrs.define
class ClientTransaction:
    """A request this handset sent and the responses received to it."""

    request: Request
    data: bytes
    sent_at: float
    responses: list[Response] = attrs.field(factory=list)

    @property
    def key(self) -> tuple[str, int, str]:
        sequence = headers.cseq(self.request)
        return (self.request.call_id or "", sequence.number, sequence.method)

    @property
    def final(self) -> Response | None:
        return next((r for r in self.responses if r.status >= 200), None)


class SipTimeout(AssertionError):
    """An expected message did not arrive before the deadline."""


class Handset:
    """One phone on the shared line (or the called party): a UDP socket and its reader thread."""

    def __init__(
        self,
        name: str,
        server: tuple[str, int],
        *,
        line: str,
        contact_user: str | None = None,
        username: str | None = None,
        password: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.server = server
        self.line = line
        self.domain = line.partition("@")[2]
        self.username, self.password = username, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        user = contact_user or line.partition(":")[2].partition("@")[0]
        self.contact = f"sip:{user}@{host}:{self.port}"
        self.answer_notifies = True
        self.notifies: list[Notify] = []
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._transactions: dict[tuple[str, int, str], ClientTransaction] = {}
        self._answered: dict[tuple[str, int, str, str], bytes] = {}
        self._cond = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._read, name=f"handset-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ socket and reader

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()

    def vanish(self) -> None:
        """Stop answering anything (the phone lost power): NOTIFYs to it time out."""
        self.answer_notifies = False
        self._running = False
        self._thread.join(2)

    def mute(self) -> None:
        """Stop answering requests (NOTIFYs time out) while still reading responses."""
        with self._cond:
            self.answer_notifies = False

    def send_bytes(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(data, to or self.server)

    def _read(self) -> None:
        while self._running:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = parse_message(data)
            except MalformedMessage as error:
                with self._cond:
                    self.errors.append(f"unparsable: {error.detail}")
                continue
            if isinstance(message, Response):
                self._on_response(message)
            else:
                self._on_request(message)

    def _on_response(self, response: Response) -> None:
        sequence = headers.cseq(response)
        key = (response.call_id or "", sequence.number, sequence.method)
        with self._cond:
            transaction = self._transactions.get(key)
            if transaction is not None:
                transaction.responses.append(response)
            self._cond.notify_all()

    def _on_request(self, request: Request) -> None:
        sequence = headers.cseq(request)
        branch = headers.top_via(request).branch or ""
        key = (request.call_id or "", sequence.number, sequence.method, branch)
        with self._cond:
            if not self.answer_notifies:
                return
            previous = self._answered.get(key)
        if previous is not None:  # a retransmission: the same answer again (RFC 3261 17.2)
            self.send_bytes(previous, self._reply_address(request))
            return
        if request.method == "NOTIFY":
            self.respond(request, 200)
            with self._cond:
                self.notifies.append(Notify(request))
                self._cond.notify_all()
            return
        with self._cond:
            if request.method != "ACK" and any(_same_request(request, seen) for seen in self.requests):
                return  # retransmitted before we answered it
            self.requests.append(request)
            self._cond.notify_all()

    def _reply_address(self, request: Request) -> tuple[str, int]:
        via = headers.top_via(request)
        return (via.received or via.host, via.rport or via.port or 5060)

    def _wait(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SipTimeout(f"{self.name}: no {what} within {timeout} s")
                self._cond.wait(left)

    # ------------------------------------------------------------------ requests we send

    def build(
        self,
        method: str,
        uri: str,
        *,
        from_: str,
        to: str,
        call_id: str,
        cseq: int,
        extra: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        branch: str | None = None,
    ) -> Request:
        fields: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch or new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method not in ("ACK", "CANCEL", "BYE"):
            fields.append(("Contact", f"<{self.contact}>"))
        fields.extend(extra)
        if body:
            fields.append(("Content-Type", "application/sdp"))
        fields.append(("User-Agent", f"scaserver-test-handset/{self.name}"))
        return Request(method, uri, Headers.of(*fields), body)

    def start(self, request: Request) -> ClientTransaction:
        """Send ``request`` and track its responses (no waiting)."""
        data = serialize(request)
        transaction = ClientTransaction(request, data, time.monotonic())
        with self._cond:
            self._transactions[transaction.key] = transaction
        self.send_bytes(data)
        return transaction

    def wait_response(
        self,
        transaction: ClientTransaction,
        accept: Callable[[Response], bool] = lambda r: r.status >= 200,
        timeout: float = WAIT,
    ) -> Response:
        """The first response to ``transaction`` that ``accept``s; the request is retransmitted
        every T1 (doubling up to 4 s) until any response arrives (17.1.1.2, 17.1.2.2)."""
        deadline = time.monotonic() + timeout
        interval = T1
        next_send = time.monotonic() + interval
        while True:
            with self._cond:
                found = next((r for r in transaction.responses if accept(r)), None)
                heard = bool(transaction.responses)
                if found is not None:
                    return found
                now = time.monotonic()
                if now >= deadline:
                    raise SipTimeout(
                        f"{self.name}: no matching response to {transaction.request.method}"
                        f" within {timeout} s (got {[r.status for r in transaction.responses]})"
                    )
                self._cond.wait(min(deadline, next_send) - now)
            if not heard and time.monotonic() >= next_send:
                self.send_bytes(transaction.data)
                interval = min(interval * 2, 4.0)
                next_send = time.monotonic() + interval

    def request(self, request: Request, timeout: float = WAIT) -> Response:
        return self.wait_response(self.start(request), timeout=timeout)

    def respond(
        self,
        request: Request,
        status: int,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        fields = list(extra)
        if (request.method in ("INVITE", "SUBSCRIBE") and 200 <= status < 300) or 100 < status < 200:
            fields.append(("Contact", f"<{self.contact}>"))
        if 100 < status < 300 and request.method == "INVITE":
            fields.extend(("Record-Route", value) for value in request.headers.lines("Record-Route"))
        if body:
            fields.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, headers=Headers.of(*fields), to_tag=to_tag, body=body)
        data = serialize(response)
        sequence = headers.cseq(request)
        key = (request.call_id or "", sequence.number, sequence.method, headers.top_via(request).branch or "")
        with self._cond:
            self._answered[key] = data
        self.send_bytes(data, self._reply_address(request))
        return response

    # ------------------------------------------------------------------ waiting for what arrives

    def expect_request(self, method: str, timeout: float = WAIT) -> Request:
        """The oldest unconsumed request of ``method`` (taken off the queue)."""
        found: list[Request] = []

        def ready() -> bool:
            for request in self.requests:
                if request.method == method:
                    found.append(request)
                    return True
            return False

        self._wait(ready, timeout, f"{method} request")
        with self._cond:
            self.requests.remove(found[0])
        return found[0]

    def wait_notify(
        self, accept: Callable[[Notify], bool], timeout: float = WAIT, *, after: int = 0
    ) -> Notify:
        """The first NOTIFY received (from position ``after`` on) that ``accept``s."""
        found: list[Notify] = []

        def ready() -> bool:
            match = next((n for n in self.notifies[after:] if accept(n)), None)
            if match is not None:
                found.append(match)
            return match is not None

        self._wait(ready, timeout, "matching NOTIFY")
        return found[0]

    def call_info_notifies(self) -> list[Notify]:
        with self._cond:
            return [n for n in self.notifies if n.event == "call-info"]

    def line_states(self, index: int = 1) -> list[str | None]:
        """The state of ``index`` in every call-info NOTIFY received, repeats collapsed."""
        states: list[str | None] = []
        for notify in self.call_info_notifies():
            state = notify.state_of(index)
            if not states or states[-1] != state:
                states.append(state)
        return states

    # ------------------------------------------------------------------ registration, digest

    def with_credentials(self, request: Request, challenge: Response) -> Request:
        """``request`` again with digest credentials for the challenge (RFC 3261 22.2, qop=auth)."""
        assert self.username is not None and self.password is not None
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        for line in challenge.headers.lines(header):
            params = headers.parse_auth(line)
            algorithm = (params.param("algorithm") or "MD5").upper()
            if algorithm in ("MD5", "SHA-256"):
                break
        else:
            raise AssertionError(f"no usable challenge in {challenge}")
        name = "md5" if algorithm == "MD5" else "sha256"

        def h(text: str) -> str:
            return hashlib.new(name, text.encode()).hexdigest()

        realm, nonce = params.param("realm") or "", params.param("nonce") or ""
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        ha1 = h(f"{self.username}:{realm}:{self.password}")
        ha2 = h(f"{request.method}:{request.uri}")
        digest = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        opaque = params.param("opaque")
        value = (
            f'Digest username="{self.username}", realm="{realm}", nonce="{nonce}", uri="{request.uri}", '
            f'response="{digest}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc}'
        )
        if opaque is not None:
            value += f', opaque="{opaque}"'
        sequence = headers.cseq(request)
        rest = request.headers.remove("Via").remove("CSeq")
        fields = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={new_branch()};rport"),
            ("CSeq", f"{sequence.number + 1} {sequence.method}"),
            *rest.fields,
            (answer, value),
        ]
        return request.with_headers(Headers.of(*fields))

    def send_authenticated(self, request: Request, timeout: float = WAIT) -> tuple[Response, Request]:
        """Send ``request``; on 401/407 send it again with credentials. Returns the final
        response and the request that got it."""
        response = self.request(request, timeout)
        if response.status in (401, 407) and self.username is not None:
            request = self.with_credentials(request, response)
            response = self.request(request, timeout)
        return response, request

    def register(self, aor: str | None = None, expires: int = 300) -> Response:
        aor = aor or self.line
        request = self.build(
            "REGISTER",
            f"sip:{self.domain}",
            from_=f"<{aor}>;tag={new_tag()}",
            to=f"<{aor}>",
            call_id=uuid.uuid4().hex,
            cseq=1,
            extra=(("Expires", str(expires)),),
        )
        response, _ = self.send_authenticated(request)
        return response

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self,
        event: str,
        *,
        expires: int | None = 3600,
        index: int | None = None,
        dialog: Dialog | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> tuple[Response, Dialog, Request]:
        """SUBSCRIBE to ``event`` of the line: initial (``dialog`` None) or in-dialog.

        ``index`` adds ``Call-Info: <sip:domain>;appearance-index=N`` (line-seize, 3.7).
        Returns the final response, the subscription dialog (remote tag from the 2xx) and
        the request sent last.
        """
        fields = [("Event", event), ("Accept", "application/x-sca-info"), *extra]
        if expires is not None:
            fields.append(("Expires", str(expires)))
        if index is not None:
            fields.append(("Call-Info", f"<sip:{self.domain}>;appearance-index={index}"))
        if dialog is None:
            dialog = Dialog(uuid.uuid4().hex, new_tag(), None, self.line, self.line, self.line)
        else:
            dialog.local_cseq += 1
        to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        request = self.build(
            "SUBSCRIBE",
            dialog.remote_target,
            from_=f"<{dialog.local_uri}>;tag={dialog.local_tag}",
            to=to,
            call_id=dialog.call_id,
            cseq=dialog.local_cseq,
            extra=tuple(fields),
        )
        response, request = self.send_authenticated(request)
        dialog.local_cseq = headers.cseq(request).number
        if 200 <= response.status < 300 and dialog.remote_tag is None:
            dialog.remote_tag = headers.to_addr(response).tag
            found = headers.contacts(response)
            if isinstance(found, list) and found:
                dialog.remote_target = str(found[0].uri)
        return response, dialog, request

    # ------------------------------------------------------------------ calls (UAC)

    def invite(
        self,
        target: str,
        *,
        index: int | None = None,
        to: str | None = None,
        body: bytes | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> tuple[ClientTransaction, Dialog]:
        """An initial INVITE from the line to ``target`` (sent to the server), with the
        appearance index in Call-Info when given (O5)."""
        dialog = Dialog(uuid.uuid4().hex, new_tag(), None, self.line, to or target, target)
        fields = list(extra)
        if index is not None:
            fields.append(("Call-Info", f"<sip:{self.domain}>;appearance-index={index}"))
        request = self.build(
            "INVITE",
            target,
            from_=f"<{self.line}>;tag={dialog.local_tag}",
            to=f"<{dialog.remote_uri}>",
            call_id=dialog.call_id,
            cseq=1,
            extra=tuple(fields),
            body=sdp(self.port) if body is None else body,
        )
        return self.start(request), dialog

    def established(self, dialog: Dialog, response: Response) -> None:
        """Complete a UAC dialog from a 2xx: remote tag, target, route set (RFC 3261 12.1.2)."""
        dialog.remote_tag = headers.to_addr(response).tag
        found = headers.contacts(response)
        if isinstance(found, list) and found:
            dialog.remote_target = str(found[0].uri)
        dialog.route_set = list(reversed(response.headers.values("Record-Route")))

    def ack(self, dialog: Dialog, transaction: ClientTransaction, response: Response) -> None:
        """ACK a final response to an INVITE: end to end for 2xx (13.2.2.4), in the
        transaction for the others (17.1.1.3)."""
        number = headers.cseq(transaction.request).number
        to = response.headers.get("To") or ""
        if response.status >= 300:
            via = transaction.request.headers.get("Via") or ""
            request = Request(
                "ACK",
                transaction.request.uri,
                Headers.of(
                    ("Via", via),
                    ("Max-Forwards", "70"),
                    ("From", transaction.request.headers.get("From") or ""),
                    ("To", to),
                    ("Call-ID", dialog.call_id),
                    ("CSeq", f"{number} ACK"),
                ),
            )
            self.send_bytes(serialize(request))
            return
        self.send_bytes(serialize(self._in_dialog_request(dialog, "ACK", number)))

    def _in_dialog_request(
        self,
        dialog: Dialog,
        method: str,
        number: int,
        *,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        fields = [("Route", route) for route in dialog.route_set]
        to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        return self.build(
            method,
            dialog.remote_target,
            from_=f"<{dialog.local_uri}>;tag={dialog.local_tag}",
            to=to,
            call_id=dialog.call_id,
            cseq=number,
            extra=(*fields, *extra),
            body=body,
        )

    def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> ClientTransaction:
        """A new in-dialog request (re-INVITE, BYE...), sent through the route set (12.2.1.1)."""
        dialog.local_cseq += 1
        return self.start(self._in_dialog_request(dialog, method, dialog.local_cseq, body=body, extra=extra))

    # ------------------------------------------------------------------ calls (UAS)

    def uas_dialog(self, invite: Request) -> Dialog:
        """The dialog an initial INVITE creates on our side (RFC 3261 12.1.1), with a fresh
        local tag for the responses; the route set is the INVITE's Record-Route, in order."""
        sender = headers.from_addr(invite)
        found = headers.contacts(invite)
        target = str(found[0].uri) if isinstance(found, list) and found else str(sender.uri)
        return Dialog(
            invite.call_id or "",
            new_tag(),
            sender.tag,
            str(headers.to_addr(invite).uri),
            str(sender.uri),
            target,
            list(invite.headers.values("Record-Route")),
        )


def _same_request(one: Request, other: Request) -> bool:
    return (
        one.method == other.method
        and one.call_id == other.call_id
        and headers.cseq(one) == headers.cseq(other)
        and headers.top_via(one).branch == headers.top_via(other).branch
    )


def tag_of(address: str) -> str | None:
    return parse_name_addr(address).tag


@contextmanager
def handsets(*phones: Handset) -> Iterator[tuple[Handset, ...]]:
    """Close every handset's socket on the way out."""
    try:
        yield phones
    finally:
        for phone in phones:
            phone.close()


def message_text(message: Message) -> str:
    return serialize(message).decode(errors="replace")
