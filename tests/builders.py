"""Factories shared by tests: a whole pure SIP core, and a wire that drives it with text."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import attrs

from scaserver.app import client_owners
from scaserver.proxy.proxy import Proxy, ProxySettings
from scaserver.proxy.routing import Interface, ProxyIdentity
from scaserver.registrar.registrar import Registrar, RegistrarPolicy
from scaserver.router.router import SipRouter
from scaserver.router.settings import CoreSettings
from scaserver.sca.engine import ScaEngine
from scaserver.sca.line import SharedLine
from scaserver.sca.settings import ScaSettings, ServerRole
from scaserver.sip.actions import Action, Send
from scaserver.sip.digest import Authenticator, Credentials, NonceFactory
from scaserver.sip.digestclient import ClientCredentials, authorize, parse_challenges, select_challenge
from scaserver.sip.message import Message, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize
from scaserver.sip.timers import TimerConfig
from scaserver.sip.transactions import TransactionLayer
from scaserver.sip.trust import TrustedPeer, TrustedPeers

DOMAIN = "example.com"
SERVER = Peer(Transport.UDP, "192.0.2.1", 5060)
SERVER_TCP = Peer(Transport.TCP, "192.0.2.1", 5060)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "2001": "line-secret"}


def credentials(username: str, realm: str = DOMAIN) -> Credentials | None:
    password = PASSWORDS.get(username)
    return None if password is None else Credentials.from_password(username, realm, password)


def make_core(
    *,
    require_auth: bool = True,
    upstream: Peer | None = None,
    trusted: Iterable[TrustedPeer] = (),
    lines: Sequence[SharedLine] = (),
    insert_pai: bool = False,
) -> SipRouter:
    """A SipRouter for ``example.com`` on 192.0.2.1:5060 (UDP and TCP) with deterministic ids."""
    counter = itertools.count(1)

    def unique() -> str:
        return f"u{next(counter):06d}"

    identity = ProxyIdentity(
        (
            Interface(Transport.UDP, SERVER.host, SERVER.port),
            Interface(Transport.TCP, SERVER.host, SERVER.port),
        )
    )
    layer = TransactionLayer(
        TimerConfig(),
        branch_factory=unique,
        local_via=lambda peer: (peer.transport.value, SERVER.host, SERVER.port),
    )
    draws = itertools.count(1)

    def entropy(size: int) -> bytes:
        return next(draws).to_bytes(size, "big")

    sca = ScaEngine(ScaSettings(), ServerRole(contact=f"sip:{SERVER.host}:{SERVER.port}"), tag_factory=unique)
    sca.provision(lines)
    core = SipRouter(
        CoreSettings(
            frozenset({DOMAIN}), upstream=upstream, require_auth=require_auth, insert_pai=insert_pai
        ),
        layer,
        identity,
        Authenticator(
            credentials,
            NonceFactory(b"test-secret", entropy),
            DOMAIN,
            domains=frozenset({DOMAIN}),
        ),
        TrustedPeers(tuple(trusted)),
        Registrar(RegistrarPolicy(frozenset({DOMAIN}))),
        Proxy(identity, ProxySettings()),
        sca,
        unique,
    )
    core.owners = client_owners(core)
    return core


def sent(actions: Iterable[Action]) -> list[tuple[Message, Peer]]:
    """The messages the core asked to send, re-parsed from their wire form."""
    return [(parse_message(serialize(a.message)), a.peer) for a in actions if isinstance(a, Send)]


@attrs.define
class Wire:
    """Drives a core with message text, as the network would, and keeps what it sent."""

    core: SipRouter
    now: float = 1_000_000.0
    outbox: list[tuple[Message, Peer]] = attrs.field(factory=list)

    def deliver(self, text: str | bytes, peer: Peer) -> list[tuple[Message, Peer]]:
        data = text.encode() if isinstance(text, str) else text
        if isinstance(text, str) and "\r\n" not in text:
            data = text.replace("\n", "\r\n").encode()
        result = sent(self.core.receive(data, peer, self.now))
        self.outbox += result
        return result

    def send(self, message: Message, peer: Peer) -> list[tuple[Message, Peer]]:
        return self.deliver(serialize(message), peer)

    def responses(self) -> list[Response]:
        return [m for m, _ in self.outbox if isinstance(m, Response)]

    def requests(self) -> list[Request]:
        return [m for m, _ in self.outbox if isinstance(m, Request)]


def digest_authorization(
    request: Request,
    challenge: Response,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str = "c0ffee",
) -> Request:
    """``request`` answered to ``challenge`` (401 or 407) with Digest credentials for the
    topmost offer (the client side of scaserver.sip.digest)."""
    chosen = select_challenge(
        parse_challenges(challenge), lambda realm: ClientCredentials.from_password(username, realm, password)
    )
    assert chosen is not None, "no Digest challenge to answer"
    offer, secrets = chosen
    return authorize(request, offer, secrets, nc=nc, cnonce=cnonce)
