"""The registrar engine: REGISTER processing per RFC 3261 section 10.3.

Steps, in the RFC's order (the whole request is applied atomically: a failure at any step
changes nothing):

1. The Request-URI must be a SIP/SIPS URI (else 416) naming one of our domains (else 404).
2. Every option in Require must be supported (else 420 with Unsupported, section 8.2.2.3).
   Supported: ``path`` (RFC 3327).
3. The To URI (the address-of-record) must be SIP or SIPS (else 400, RFC 4475 section 3.3.4),
   in one of our domains and, when an ``aor_exists`` check is configured, known (else 404).
4. Authentication is the caller's (the dispatcher runs the
   :class:`~scaserver.sip.digest.Authenticator`); authorisation is re-checked here:
   an authenticated user may only register its own AoR (else 403; ``authenticated_user``
   None means a trusted peer or authentication disabled).
5. Contact ``*`` needs ``Expires: 0`` and no other Contact (else 400); it removes every binding,
   subject to the Call-ID/CSeq rule of step 7.
6. No Contact: a query; the 200 lists the current bindings.
7. Each Contact: expiry from its ``expires`` parameter, else the Expires header, else
   ``default_expires``; 0 removes the binding; under ``min_expires`` fails the request with
   423 and Min-Expires; over ``max_expires`` is clamped.  For an existing binding with the
   same Call-ID, a CSeq that is not higher fails the request with 500 (out of order).
   A request that would leave more than ``max_contacts`` bindings fails with 503 "Too Many
   Registered Contacts" (the Kamailio and OpenSIPS reply).
8. The 200 lists every current binding with its ``expires`` parameter, echoes Path when the
   client sent ``Supported: path`` (RFC 3327 section 5.3, "lazy" mode: Path is stored either
   way), and carries a Date header (section 10.3 step 8 allows it; phones set clocks from it).
   When a Contact of the REGISTER has ``+sip.instance`` and ``reg-id`` (RFC 5626 outbound), the
   200 has ``Require: outbound`` (RFC 5626 section 6) when its first hop supports outbound: we
   are (no Path: edge proxy and registrar at once), or the first Path URI has ``ob``.

RFC 5626 flow tokens: an edge proxy separate from the registrar puts a token naming the flow
in the Path it adds, so that requests routed back through it find the connection.  Here the
edge proxy and the registrar are one process: the flow is stored with the binding itself
(:attr:`Binding.received`, persisted) and requests to the binding are sent to it
(:attr:`Binding.flow`), so no Path token is added: it would hold nothing the binding does not.
What a token does add is inside dialogs, where the Request-URI is the phone's Contact (a
private address behind NAT, possibly the same for phones behind two NATs): our Record-Route
carries the flows of the dialog's two ends (``;ob``, :mod:`scaserver.proxy.routing`).  What no
token can add is a way back into a TCP or TLS connection that closed: the phone registers again
over a new flow (RFC 5626 section 4.4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

from scaserver.registrar.binding import Binding, BindingKey, KeyKind, RemovalReason
from scaserver.registrar.location import LocationService
from scaserver.registrar.nat import is_outbound
from scaserver.sip.actions import EngineAction, Respond
from scaserver.sip.date import date_value
from scaserver.sip.domains import DomainPolicy, as_domain_policy
from scaserver.sip.errors import (
    BadExtension,
    BadRequest,
    Forbidden,
    IntervalTooBrief,
    MalformedMessage,
    NotFound,
    ServerInternalError,
    ServiceUnavailable,
    SipError,
    UnsupportedUriScheme,
)
from scaserver.sip.headers import Star, option_tags, parse_contacts, parse_cseq, parse_uint32
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response
from scaserver.sip.responses import make_response, response_for
from scaserver.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri
from scaserver.sip.validation import unsupported_options

SUPPORTED_OPTIONS: Final = frozenset({"path", "outbound"})


class TooManyContacts(ServiceUnavailable, status=503, reason="Too Many Registered Contacts"):
    """The AoR would exceed ``max_contacts`` bindings (Kamailio/OpenSIPS ``max_contacts``)."""


class OutOfOrderError(ServerInternalError, status=500, reason="Out of Order"):
    """A REGISTER with the Call-ID of an existing binding and a CSeq that is not higher
    (RFC 3261 section 10.3 step 7: "the update MUST be aborted and the request fails")."""


@attrs.frozen
class RegistrarSettings:
    """``[registrar]``: REGISTER expiry bounds (RFC 3261 section 10.3) and bindings per AoR (0 = no limit)."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10


@attrs.frozen
class RegistrarPolicy:
    """What the registrar applies: ``domains`` decides which domains we hold bindings for (a
    set of names is read as ``server.domains``; the composition root derives it from several
    tables), ``settings`` are ``[registrar]``."""

    domains: DomainPolicy = attrs.field(converter=as_domain_policy)
    settings: RegistrarSettings = RegistrarSettings()
    supported: frozenset[str] = SUPPORTED_OPTIONS


def own_aor_only(authenticated_user: str | None, aor: SipUri) -> bool:
    """Default authorisation: a subscriber registers only its own AoR (section 10.3 step 4)."""
    return authenticated_user is None or aor.user == authenticated_user


@attrs.frozen
class _Change:
    key: BindingKey
    binding: Binding | None  # None: remove


def _format_q(q: float) -> str:
    return f"{q:.3f}".rstrip("0").rstrip(".")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def response_tag(request: Request) -> str:
    """A To tag for our final response (RFC 3261 section 8.2.6.2), derived from the request so
    that the same request always gets the same tag and no randomness is needed."""
    material = "\x00".join(
        (
            request.headers.get("Call-ID") or "",
            request.headers.get("CSeq") or "",
            request.headers.get("From") or "",
        )
    )
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _asks_outbound(found: list[NameAddr] | Star, path: tuple[str, ...]) -> bool:
    """A Contact of the request (``found``) carries ``+sip.instance`` and ``reg-id`` (RFC 5626
    section 5.2) and its first hop supports outbound: that is us (no Path), or the first Path
    URI has ``ob`` (RFC 5626 section 6; behind an edge proxy without it, the phone gets plain
    registration)."""
    if isinstance(found, Star):
        return False
    for contact in found:  # a loop, not any(generator): this runs for every REGISTER
        if contact.param("+sip.instance") and contact.param("reg-id"):
            break
    else:
        return False
    if not path:
        return True
    try:
        first = parse_name_addr(path[0]).uri
    except SipError:
        return False
    return isinstance(first, SipUri) and first.has_param("ob")


def contact_line(binding: Binding, now: float) -> str:
    """A Contact value of a REGISTER 200 for ``binding`` (section 10.3 step 8)."""
    text = f"<{binding.contact}>"
    for name, value in binding.params:
        text += f";{name}" if value is None else f";{name}={value}"
    text += f";expires={binding.remaining(now)}"
    if binding.q is not None:
        text += f";q={_format_q(binding.q)}"
    return text


@attrs.define
class Registrar:
    """REGISTER handling over a :class:`LocationService` (RFC 3261 section 10.3)."""

    policy: RegistrarPolicy
    location: LocationService = attrs.field(factory=LocationService)
    aor_exists: Callable[[str], bool] | None = None
    may_register: Callable[[str | None, SipUri], bool] = own_aor_only

    def on_register(
        self,
        request: Request,
        peer: Peer,
        authenticated_user: str | None,
        now: float,
        *,
        transaction: ServerKey,
    ) -> list[EngineAction]:
        """Process one REGISTER; the actions are the location changes (timers and binding
        events) followed by the final response."""
        try:
            changes, aor, found, path = self._decide(request, peer, authenticated_user, now)
        except SipError as error:
            return [Respond(transaction, response_for(request, error, to_tag=response_tag(request)))]
        actions: list[EngineAction] = []
        for change in changes:
            if change.binding is None:
                actions += self.location.remove(change.key, RemovalReason.UNREGISTERED, now)
            else:
                actions += self.location.put(change.binding, now)
        actions.append(Respond(transaction, self._ok(request, aor, found, path, now)))
        return actions

    def on_timer(self, key: BindingKey, name: str, now: float) -> list[EngineAction]:
        return self.location.on_timer(key, name, now)

    def use_domains(self, domains: DomainPolicy) -> None:
        """A reloaded directory's domains: those this registrar serves from the next REGISTER
        on (the bindings registered stay)."""
        self.policy = attrs.evolve(self.policy, domains=domains)

    def restore(self, bindings: Iterable[Binding], now: float) -> list[EngineAction]:
        return self.location.restore(bindings, now)

    def lookup(self, aor: str, now: float) -> tuple[Binding, ...]:
        return self.location.lookup(aor, now)

    def flow_failed(
        self, flow: Peer, now: float, *, outbound_only: bool = False
    ) -> tuple[list[EngineAction], int]:
        """The flow ``flow`` is dead (:mod:`scaserver.registrar.nat`): remove the bindings
        registered over it (only the RFC 5626 outbound ones with ``outbound_only``, for a
        closed connection: a phone without outbound may reconnect and is reached by dialling
        its Contact).  A binding with RFC 8599 push parameters stays: a push reaches it
        whatever became of its flow.  The actions and how many were removed; the bindings
        are found by the location service's index of flows, not by a walk."""
        actions: list[EngineAction] = []
        doomed = [
            binding
            for binding in self.location.on_flow(flow)
            if not binding.push and (is_outbound(binding) or not outbound_only)
        ]
        for binding in doomed:
            actions += self.location.remove(binding.key, RemovalReason.FLOW_FAILED, now)
        return actions, len(doomed)

    def reaches(self, host: str, port: int) -> bool:
        """Whether a binding registered here (any AoR) is reached at ``host:port``: its
        Contact address or its flow (relay rule R7); one look-up, no scan."""
        return self.location.reaches(host, port)

    # Steps 1 to 7 ------------------------------------------------------------------------

    def _decide(
        self, request: Request, peer: Peer, authenticated_user: str | None, now: float
    ) -> tuple[list[_Change], str, list[NameAddr] | Star, tuple[str, ...]]:
        """The changes the REGISTER asks for, its AoR, its Contacts and its Path (read once,
        for the 200)."""
        domains = self.policy.domains
        request_uri = parse_uri(request.uri)
        if not isinstance(request_uri, SipUri):
            raise UnsupportedUriScheme(f"Request-URI scheme of {request.uri!r}")
        if not domains.is_ours(request_uri.host):
            raise NotFound(f"not a registrar for the Request-URI: {domains.why_not(request_uri.host)}")
        # The first line of each header, in one pass (what the accessors of sip.headers would
        # each look up again); the list headers are read by name only when present.
        headers = request.headers
        first: dict[str, str] = {}
        for name, value in headers.fields:
            if name not in first:
                first[name] = value
        if "Require" in first:
            unsupported = unsupported_options(request, "Require", self.policy.supported)
            if unsupported:
                raise BadExtension(
                    f"unsupported {unsupported}", headers=Headers.of(("Unsupported", ", ".join(unsupported)))
                )
        to_text = first.get("To")
        if to_text is None:
            raise MalformedMessage("missing To")
        to_uri = parse_name_addr(to_text).uri
        if not isinstance(to_uri, SipUri):
            raise BadRequest("address-of-record is not a SIP or SIPS URI")
        aor = to_uri.aor()
        if not domains.is_ours(to_uri.host):
            raise NotFound(f"address-of-record {aor!r}: {domains.why_not(to_uri.host)}")
        if self.aor_exists is not None and not self.aor_exists(aor):
            raise NotFound(f"no such address-of-record {aor!r}")
        if not self.may_register(authenticated_user, to_uri):
            raise Forbidden(f"{authenticated_user!r} may not register {aor!r}")
        call_id = first.get("Call-ID")
        if call_id is None:
            raise BadRequest("missing Call-ID")
        cseq_text = first.get("CSeq")
        if cseq_text is None:
            raise MalformedMessage("missing CSeq")
        number = parse_cseq(cseq_text).number
        expires_text = first.get("Expires")
        header_expires = None if expires_text is None else parse_uint32(expires_text, "Expires")
        found = parse_contacts(headers.values("Contact")) if "Contact" in first else []
        path = headers.values("Path") if "Path" in first else ()
        if isinstance(found, Star):
            if header_expires != 0:
                raise BadRequest("Contact '*' requires Expires: 0")
            every = self.location.bindings(aor)
            for binding in every:
                self._check_order(binding, call_id, number)
            return [_Change(binding.key, None) for binding in every], aor, found, path
        # Read only, in the order the bindings came (the order of no answer depends on it).
        current = self.location.keyed(aor)
        user_agent = first.get("User-Agent")
        changes: dict[BindingKey, _Change] = {}
        too_brief = False
        for contact in found:
            # What every Contact of the REGISTER shares, as arguments (no value built for them).
            change = self._contact_change(
                contact,
                current,
                peer=peer,
                aor=aor,
                call_id=call_id,
                number=number,
                header_expires=header_expires,
                now=now,
                path=path,
                user_agent=user_agent,
            )
            if change is None:
                too_brief = True
                continue
            changes.pop(change.key, None)
            changes[change.key] = change
        if too_brief:
            raise IntervalTooBrief(
                "expiry under the minimum",
                headers=Headers.of(("Min-Expires", str(self.policy.settings.min_expires))),
            )
        # The changes that change something (a removal of a binding that is not there does
        # not), and how many bindings the AoR would have after them.
        kept: list[_Change] = []
        final = len(current)
        for key, change in changes.items():
            if change.binding is not None:
                final += key not in current
                kept.append(change)
            elif key in current:
                final -= 1
                kept.append(change)
        limit = self.policy.settings.max_contacts
        if limit and final > limit and final > len(current):
            raise TooManyContacts(f"{aor!r} would have {final} bindings")
        return kept, aor, found, path

    def _contact_change(
        self,
        contact: NameAddr,
        current: Mapping[BindingKey, Binding],
        *,
        peer: Peer,
        aor: str,
        call_id: str,
        number: int,
        header_expires: int | None,
        now: float,
        path: tuple[str, ...],
        user_agent: str | None,
    ) -> _Change | None:
        """The change one Contact asks for, or None when its expiry is under the minimum."""
        uri = contact.uri
        if not isinstance(uri, SipUri):
            raise BadRequest(f"Contact {contact} is not a SIP or SIPS URI")
        # One pass over the header parameters: each name lowered once; the first of a name
        # counts (as NameAddr.param), valueless ones read as "".
        named: dict[str, str] = {}
        params: list[tuple[str, str | None]] = []
        for name, value in contact.params:
            lowered = name.lower()
            named.setdefault(lowered, "" if value is None else value)
            if lowered not in ("expires", "q"):
                params.append((name, value))
        param = named.get("expires")
        requested = parse_uint32(param, "Contact expires") if param else header_expires
        if requested is None:
            requested = self.policy.settings.default_expires
        instance_param = named.get("+sip.instance")
        instance = _unquote(instance_param) if instance_param else None
        reg_id_param = named.get("reg-id")
        reg_id = parse_uint32(reg_id_param, "reg-id") if reg_id_param else None
        pn: list[tuple[str, str]] = []
        for uri_name, uri_value in uri.params:
            lowered = uri_name.lower()
            if lowered.startswith("pn-"):
                pn.append((lowered, uri_value or ""))
        push = tuple(pn)
        text = str(uri)
        key = self._key(aor, uri, text, current, instance=instance, reg_id=reg_id, push=push)
        existing = current.get(key)
        if existing is not None and existing.call_id == call_id:
            self._check_order(existing, call_id, number)
        if requested == 0:
            return _Change(key, None)
        if requested < self.policy.settings.min_expires:
            return None
        granted = min(requested, self.policy.settings.max_expires)
        q_param = named.get("q")
        binding = Binding(
            key=key,
            contact=text,
            expires_at=now + granted,
            call_id=call_id,
            cseq=number,
            received=peer,
            q=float(q_param) if q_param else None,
            user_agent=user_agent,
            path=path,
            instance=instance,
            reg_id=reg_id,
            params=tuple(params),
            push=push,
            registered_at=existing.registered_at if existing is not None else now,
            updated_at=now,
        )
        return _Change(key, binding)

    @staticmethod
    def _key(
        aor: str,
        uri: SipUri,
        text: str,
        current: Mapping[BindingKey, Binding],
        *,
        instance: str | None,
        reg_id: int | None,
        push: tuple[tuple[str, str], ...],
    ) -> BindingKey:
        """The binding key of a contact (push-and-parking.md section 3.6); ``text`` is ``str(uri)``."""
        if instance:
            value = instance if reg_id is None else f"{instance};reg-id={reg_id}"
            return BindingKey(aor, KeyKind.INSTANCE, value)
        pn = dict(push)
        if pn.get("pn-provider") and pn.get("pn-prid"):
            triple = (pn["pn-provider"], pn["pn-prid"], pn.get("pn-param", ""))
            return BindingKey(aor, KeyKind.PUSH, " ".join(triple))
        # The same text is the same URI: no parse for the usual refresh.  (No two bindings
        # of an AoR have equivalent URIs, so the one found first is the only one.)
        for key, binding in current.items():
            if binding.contact == text and key.kind is KeyKind.URI:
                return key
        for key, binding in current.items():
            if key.kind is KeyKind.URI and uri.matches(parse_uri(binding.contact)):
                return key
        return BindingKey(aor, KeyKind.URI, text)

    @staticmethod
    def _check_order(binding: Binding, call_id: str, number: int) -> None:
        if binding.call_id == call_id and number <= binding.cseq:
            raise OutOfOrderError(f"CSeq {number} not above {binding.cseq} for Call-ID {call_id!r}")

    # Step 8 ------------------------------------------------------------------------------

    def _ok(
        self, request: Request, aor: str, found: list[NameAddr] | Star, path: tuple[str, ...], now: float
    ) -> Response:
        # One tuple of fields, in the order of the header lines (canonical names already).
        fields = [("Contact", contact_line(binding, now)) for binding in self.location.bindings(aor)]
        if path and "path" in (tag.lower() for tag in option_tags(request, "Supported")):
            fields += [("Path", value) for value in path]
        fields.append(("Date", date_value(now)))
        if _asks_outbound(found, path):
            fields.append(("Require", "outbound"))
        return make_response(request, 200, headers=Headers(tuple(fields)), to_tag=response_tag(request))
