"""SIP over TLS (RFC 3261 section 26, RFC 5630, RFC 5922) and the HTTPS context (BCP 195).

The TLS edge is the TCP edge of :mod:`scaserver.edge.tcp` under Twisted's memory-BIO TLS:
the same :class:`~scaserver.edge.tcp.SipStreamProtocol` (framing, limits, CRLF keep-alive
pong) runs inside a :class:`~twisted.protocols.tls.TLSMemoryBIOProtocol`, and the same
:class:`~scaserver.edge.tcp.SipStreamFactory` admits connections (guard, per-address and global
limits are shared with TCP).  What TLS adds:

* :func:`server_context` / :func:`client_context`: TLS 1.2 and 1.3 only, forward-secret AEAD
  suites only (ECDHE with AES-GCM or ChaCha20-Poly1305; the TLS 1.3 suites), no compression,
  no renegotiation, no session tickets;
* a handshake timeout: a connection is registered for sending only once its handshake is
  done, and one that has not finished it within ``handshake_timeout`` seconds is closed;
* :class:`TlsCertificates`: the server context, built again on SIGHUP; a new handshake uses
  the new certificate, a connection already open keeps the one it was made with;
* :class:`TlsDialer`: outgoing connections verify the server's certificate chain against the
  CA bundle (or the system CAs) and its name against the domain the target was named by
  (RFC 5922 section 7.2: a SAN URI ``sip:domain``, else a DNS SAN; the subject CN only when
  the certificate has neither; no wildcards).  A refused certificate fails the handshake
  before a byte of SIP is written; the queued messages are dropped and the transactions told.

Every handshake is counted in :class:`TlsStats` (completed, or failed by reason: ``timeout``,
``protocol`` (version, suite or a malformed record), ``certificate`` (chain not verified),
``name`` (the certificate does not name the target), ``closed`` (the peer went away)).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import Final, cast

import attrs
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from typing_extensions import override
from zope.interface import implementer

from scaserver.edge.endpoint import Endpoint
from scaserver.edge.stack import DelayedCall, call_later
from scaserver.edge.tcp import SipStreamFactory, SipStreamProtocol, TcpListener, TcpReactor
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import top_via
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message

HANDSHAKE_FAILURES: Final = ("timeout", "protocol", "certificate", "name", "closed")
"""Why a TLS handshake failed (a metrics label)."""

CIPHERS: Final = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384"
"""TLS 1.2 suites: ECDHE key exchange with an AEAD cipher only (BCP 195, RFC 9325 4.2).
(The ``!SHA*`` exclusions leave out the CBC-mode suites that share those MAC names.)"""

_OPTIONS: Final = (
    SSL.OP_NO_COMPRESSION
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_TICKET
    | SSL.OP_SINGLE_ECDH_USE
)
_VERSIONS: Final = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


@attrs.frozen
class TlsEndpoint(Endpoint):
    """A ``[tls] listen`` address (port 5061 when none is written)."""


@attrs.frozen
class TlsSettings:
    """``[tls]``: SIP over TLS (RFC 3261 section 26, RFC 5630, RFC 5922) and the certificate
    the HTTPS listener shares.

    ``listen``: TLS listen addresses (``"HOST:PORT"``, port 5061 by default); empty = no TLS.
    ``certificate``/``key``: PEM files (the certificate file may hold the chain), read again
    on SIGHUP.  ``ca_file``: PEM bundle that verifies the certificates of servers we connect to
    and of clients that present one; "" = the system CAs (servers only).  ``verify_clients``:
    ask every client for a certificate (optional: a client without one is served as today);
    one that presents an unverifiable certificate is refused.  ``trusted_names``: a verified
    client certificate naming one of these (SAN URI ``sip:NAME``, DNS SAN, or CN when it has
    no SAN) makes the connection a trusted peer.  ``min_version``: "1.2" or "1.3".
    ``handshake_timeout``: seconds a client has to finish its handshake.  ``server_name``: the
    name a TLS next hop with a numeric host must present (RFC 5922 has no name to check for an
    address); "" with ``verify_numeric_hosts = true`` refuses such hops, false connects to them
    checking the chain only.
    """

    listen: tuple[TlsEndpoint, ...] = ()
    certificate: str = ""
    key: str = ""
    ca_file: str = ""
    verify_clients: bool = False
    trusted_names: tuple[str, ...] = ()
    min_version: str = "1.2"
    handshake_timeout: float = 5.0
    server_name: str = ""
    verify_numeric_hosts: bool = True
    connect_timeout: float = 10.0  # seconds an outgoing TLS connection has to connect

    @property
    def enabled(self) -> bool:
        """A certificate is configured (TLS listeners, HTTPS or outbound TLS can be served)."""
        return bool(self.certificate and self.key)


class TlsConfigurationError(Exception):
    """The certificate, key or CA bundle cannot be loaded."""


# ----------------------------------------------------------------------------- names (RFC 5922)


@attrs.frozen
class CertificateNames:
    """The identities a certificate carries (RFC 5922 section 7.1)."""

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateNames:
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            uris: list[str] = []
            dns: list[str] = []
        else:
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
            dns = san.get_values_for_type(x509.DNSName)
        cns = [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
        return cls(tuple(uris), tuple(dns), tuple(cns))

    def identities(self) -> frozenset[str]:
        """The SIP domains the certificate speaks for, lower case (RFC 5922 section 7.1): the
        host of each ``sip:`` SAN URI and each DNS SAN; the CN only when there are no SANs."""
        found = {uri[4:].lower() for uri in self.uris if uri.lower().startswith("sip:") and "@" not in uri}
        found |= {name.lower() for name in self.dns}
        if not self.uris and not self.dns:
            found |= {name.lower() for name in self.common_names}
        return frozenset(found)

    def names_domain(self, domain: str) -> bool:
        """Whether the certificate names ``domain`` (exact match; wildcards are not honoured,
        RFC 5922 section 7.2)."""
        return domain.lower().rstrip(".") in self.identities()


def verification_name(target_host: str, settings: TlsSettings) -> str | None:
    """The name a TLS next hop's certificate must carry: the host name it was named by; for a
    numeric host the configured ``server_name``; "" (check the chain only) when the operator
    turned ``verify_numeric_hosts`` off; None: no name to check, refuse."""
    if target_host and not _is_address(target_host):
        return target_host
    if settings.server_name:
        return settings.server_name
    return "" if not settings.verify_numeric_hosts else None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- contexts


def _base_context(settings: TlsSettings) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(_VERSIONS.get(settings.min_version, SSL.TLS1_2_VERSION))
    context.set_options(_OPTIONS)
    context.set_cipher_list(CIPHERS)
    return context


def server_context(
    settings: TlsSettings, on_client_verify: Callable[[bool], None] | None = None
) -> SSL.Context:
    """The listener's context: the certificate chain and key of ``settings``; clients are asked
    for a certificate (optional) when ``verify_clients``.  Raises :class:`TlsConfigurationError`."""
    context = _base_context(settings)
    try:
        context.use_certificate_chain_file(settings.certificate.encode())
        context.use_privatekey_file(settings.key.encode())
        context.check_privatekey()
        if settings.verify_clients:
            context.load_verify_locations(settings.ca_file.encode())
    except (SSL.Error, OSError) as error:
        raise TlsConfigurationError(_ssl_reason(error)) from None
    if settings.verify_clients:

        def verify(_conn: SSL.Connection, _cert: crypto.X509, _errno: int, _depth: int, ok: int) -> bool:
            return bool(ok)

        context.set_verify(SSL.VERIFY_PEER, verify)
    context.set_session_id(b"scaserver")
    return context


def client_context(settings: TlsSettings) -> SSL.Context:
    """The context of outgoing connections: the chain is verified against ``ca_file`` or the
    system CAs; our certificate is presented when one is configured (client identity)."""
    context = _base_context(settings)
    try:
        if settings.ca_file:
            context.load_verify_locations(settings.ca_file.encode())
        else:
            context.set_default_verify_paths()
        if settings.enabled:
            context.use_certificate_chain_file(settings.certificate.encode())
            context.use_privatekey_file(settings.key.encode())
    except (SSL.Error, OSError) as error:
        raise TlsConfigurationError(_ssl_reason(error)) from None
    return context


def _ssl_reason(error: BaseException) -> str:
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        return "; ".join(str(item[2]) for item in error.args[0] if len(item) == 3) or "TLS library error"
    return str(error)


def failure_reason(reason: Failure | None) -> str:
    """The :data:`HANDSHAKE_FAILURES` label of a connection lost during its handshake."""
    if reason is None or not isinstance(reason.value, SSL.Error):
        return "closed"
    text = _ssl_reason(reason.value).lower()
    if "certificate" in text:
        return "certificate"
    return "protocol"


# ----------------------------------------------------------------------------- statistics


@attrs.define
class TlsStats:
    """Handshake outcomes since start (``scaserver_tls_handshakes_total``)."""

    completed: int = 0
    failed: Counter[str] = attrs.field(factory=lambda: Counter(dict.fromkeys(HANDSHAKE_FAILURES, 0)))
    open: int = 0


# ----------------------------------------------------------------------------- the certificate


@implementer(IOpenSSLServerConnectionCreator)
class TlsCertificates:
    """The server-side context; :meth:`reload` builds it again from the files (SIGHUP)."""

    _log = Logger()

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.context = server_context(settings)
        self.generation = 1

    def reload(self) -> bool:
        """Read the certificate and key again; on error keep the current ones (logged)."""
        try:
            context = server_context(self.settings)
        except TlsConfigurationError as error:
            self._log.error(
                "TLS certificate {path} not reloaded, the current one stays: {reason}",
                path=self.settings.certificate,
                reason=str(error),
            )
            return False
        self.context, self.generation = context, self.generation + 1
        self._log.info("TLS certificate {path} reloaded", path=self.settings.certificate)
        return True

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:  # noqa: N802 (Twisted's name)
        return SSL.Connection(self.context, None)


# ----------------------------------------------------------------------------- connections


@implementer(IHandshakeListener)
class TlsStreamProtocol(SipStreamProtocol):
    """A SIP stream connection inside TLS: sends only once the handshake is done, and gives
    up on a handshake that takes longer than ``handshake_timeout``."""

    _log = Logger()

    def __init__(self, *args: object, tls: TlsEdge, server_name: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, transport=Transport.TLS, **kwargs)  # type: ignore[arg-type]
        self._tls = tls
        self._server_name = server_name
        self._handshake: DelayedCall | None = None
        self.handshake_done = False
        self.name_mismatch = False
        self.identity: str | None = None  # the trusted name of a verified client certificate
        self.certified: frozenset[str] = frozenset()  # what a verified client certificate names

    @override
    def connectionMade(self) -> None:
        self._handshake = call_later(
            self._clock, self._tls.settings.handshake_timeout, self._handshake_timeout
        )
        super().connectionMade()

    @override
    def open(self) -> None:
        """Registered once the handshake completes (:meth:`handshakeCompleted`)."""

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted's name)
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
        self._handshake = None
        self.handshake_done = True
        self._tls.stats.completed += 1
        self._tls.stats.open += 1
        super().open()
        if self._server_name is None:
            certificate = self._peer_certificate()
            if certificate is not None:  # verified against ca_file in the handshake
                self.certified = CertificateNames.of(certificate).identities()
            self.identity = self._tls.identify(self.peer, certificate)
            if self.identity is not None:
                self.vouch()

    @override
    def deliver(self, message: bytes) -> None:
        if self.certified and b";alias" in message:
            self._honour_alias(message)
        super().deliver(message)

    def _honour_alias(self, message: bytes) -> None:
        """RFC 5923 section 5: a request whose top Via offers ``alias`` makes this connection the
        way to its sent-by, when the client's verified certificate names that host."""
        try:
            parsed = parse_message(message)
            via = top_via(parsed) if isinstance(parsed, Request) else None
        except MalformedMessage:
            return  # the stack answers or drops it
        if via is None or not via.has_param("alias"):
            return
        if via.host.lower() not in self.certified:
            self._log.info(
                "alias offered by {peer} for {host} ignored: its certificate does not name it",
                peer=str(self.peer),
                host=via.host,
            )
            return
        sent_by = Peer(Transport.TLS, via.host, via.port or 5061)
        self._transports.add_alias(self, sent_by)
        self._log.info(
            "TLS connection with {peer} is an alias of {sent_by}", peer=str(self.peer), sent_by=str(sent_by)
        )

    def _peer_certificate(self) -> x509.Certificate | None:
        wire = self.transport
        if not isinstance(wire, TLSMemoryBIOProtocol):
            return None
        certificate = wire.getHandle().get_peer_certificate()
        return certificate.to_cryptography() if certificate is not None else None

    def _handshake_timeout(self) -> None:
        self._handshake = None
        self._tls.failed(
            "timeout", self.peer, f"no handshake within {self._tls.settings.handshake_timeout} s"
        )
        wire = self.transport
        if isinstance(wire, TLSMemoryBIOProtocol) and wire.transport is not None:
            wire.transport.abortConnection()
        else:
            self.close()

    @override
    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._handshake is not None and self._handshake.active():
            self._handshake.cancel()
            label = "name" if self.name_mismatch else failure_reason(reason)
            detail = (
                f"certificate does not name {self._server_name}"
                if self.name_mismatch
                else (reason.getErrorMessage() if reason is not None else "closed")
            )
            self._tls.failed(label, self.peer, detail)
        self._handshake = None
        if self.handshake_done:
            self._tls.stats.open -= 1
        if self.identity is not None:
            self._tls.forget(self.peer)
        dialed = self._server_name is not None and not self.handshake_done
        super().connectionLost(reason)
        if dialed:
            self._tls.dial_failed(self.peer, self._server_name or "")


class _ListenFactory(ServerFactory):
    """What TLS wraps on a listener: the TCP factory's admission, a TLS stream protocol."""

    noisy = False

    def __init__(self, tls: TlsEdge) -> None:
        self._tls = tls

    @override
    def buildProtocol(self, addr: object) -> SipStreamProtocol | None:
        return self._tls.streams.build_stream(addr, TlsStreamProtocol, tls=self._tls)


class _AdmittingTlsFactory(TLSMemoryBIOFactory):
    """A TLS factory that closes the connection at once when the stream factory refuses it."""

    @override
    def buildProtocol(self, addr: object) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


class _DialFactory(ClientFactory):
    noisy = False

    def __init__(self, tls: TlsEdge, peer: Peer, server_name: str) -> None:
        self._tls, self._peer, self._server_name = tls, peer, server_name

    @override
    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        streams = self._tls.streams
        return TlsStreamProtocol(
            streams.sink,
            streams.transports,
            streams.limits,
            streams.clock,
            self._peer,
            tls=self._tls,
            server_name=self._server_name,
        )

    @override
    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self._tls.log.warn(
            "cannot connect to {peer}: {reason}", peer=str(self._peer), reason=reason.getErrorMessage()
        )
        self._tls.dial_failed(self._peer, self._server_name)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    """``IOpenSSLClientConnectionCreator`` for one dial: SNI and the RFC 5922 name check."""

    def __init__(self, tls: TlsEdge, server_name: str) -> None:
        self._tls, self._name = tls, server_name

    def clientConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802
        context = self._tls.client_context
        connection = SSL.Connection(context, None)
        if self._name and not _is_address(self._name):
            connection.set_tlsext_host_name(self._name.encode("idna"))
        name = self._name
        stream = cast(TlsStreamProtocol, protocol.wrappedProtocol)

        def verify(_conn: SSL.Connection, cert: crypto.X509, _errno: int, depth: int, ok: int) -> bool:
            if not ok:
                return False
            if depth == 0 and name and not CertificateNames.of(cert.to_cryptography()).names_domain(name):
                stream.name_mismatch = True
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        connection.set_connect_state()
        return connection


class TlsEdge:
    """The TLS half of the SIP edge: stats, the server certificate, the client context, dials."""

    log = Logger()

    def __init__(self, settings: TlsSettings, streams: SipStreamFactory, reactor: TcpReactor) -> None:
        self.settings, self.streams, self._reactor = settings, streams, reactor
        self.stats = TlsStats()
        self.certificates = TlsCertificates(settings) if settings.enabled else None
        self.client_context = client_context(settings)
        self.trusted_names = frozenset(name.lower() for name in settings.trusted_names)
        self.on_identity: Callable[[Peer, str | None], None] = lambda _peer, _name: None

    def identify(self, peer: Peer, certificate: x509.Certificate | None) -> str | None:
        """The trusted name a client certificate (already verified against ``ca_file`` in the
        handshake) carries, or None; a match is logged and reported to ``on_identity``."""
        if certificate is None or not self.trusted_names:
            return None
        found = sorted(CertificateNames.of(certificate).identities() & self.trusted_names)
        if not found:
            self.log.info("TLS client {peer}: certificate names no trusted peer", peer=str(peer))
            return None
        self.log.info(
            "TLS client {peer} is trusted peer {name} by its certificate", peer=str(peer), name=found[0]
        )
        self.on_identity(peer, found[0])
        return found[0]

    def forget(self, peer: Peer) -> None:
        """A connection identified by its certificate closed."""
        self.on_identity(peer, None)

    def reload(self) -> bool:
        """SIGHUP: the certificate and key (and client context) are read again."""
        if self.certificates is None:
            return False
        reloaded = self.certificates.reload()
        if reloaded:
            try:
                self.client_context = client_context(self.settings)
            except TlsConfigurationError as error:
                self.log.error("TLS client context not reloaded: {reason}", reason=str(error))
        return reloaded

    def listener_factory(self) -> TLSMemoryBIOFactory:
        if self.certificates is None:
            raise TlsConfigurationError("a TLS listener needs tls.certificate and tls.key")
        return _AdmittingTlsFactory(
            cast(IOpenSSLServerConnectionCreator, self.certificates),
            False,
            cast(IProtocolFactory, _ListenFactory(self)),
        )

    def failed(self, reason: str, peer: Peer, detail: str) -> None:
        self.stats.failed[reason] += 1
        count = self.stats.failed[reason]
        if count & (count - 1) == 0 or reason == "name":  # 1, 2, 4, 8...: a flood logs little
            self.log.warn(
                "TLS handshake with {peer} failed ({reason}): {detail}; {count} so far",
                peer=str(peer),
                reason=reason,
                detail=detail,
                count=count,
            )

    def dial(self, peer: Peer, server_name: str) -> None:
        """:data:`~scaserver.edge.stack.Dial` for TLS: connect to numeric ``peer`` and verify
        its certificate names ``server_name`` (see :func:`verification_name`)."""
        name = verification_name(server_name, self.settings)
        if name is None:
            self.log.warn(
                "TLS to {peer} refused: a numeric host has no name to verify its certificate "
                "against (set tls.server_name, or tls.verify_numeric_hosts = false)",
                peer=str(peer),
            )
            # After the current run of actions, as a failed connection attempt would be.
            call_later(self.streams.clock, 0.0, self.dial_failed, peer, server_name)
            return
        self.log.debug("connecting to {peer} over TLS as {name}", peer=str(peer), name=name)
        factory = TLSMemoryBIOFactory(
            cast(IOpenSSLClientConnectionCreator, _ClientCreator(self, name)),
            True,
            cast(IProtocolFactory, _DialFactory(self, peer, name)),
        )
        self._reactor.connectTCP(
            peer.host, peer.port, cast(ClientFactory, factory), timeout=self.settings.connect_timeout
        )

    def dial_failed(self, peer: Peer, server_name: str) -> None:
        """The connection to ``peer`` failed: drop what was queued, and tell the transactions,
        which know the peer by the name it was reached by when it had one."""
        dropped = self.streams.transports.dial_failed(peer)
        if dropped:
            self.log.warn(
                "TLS to {peer} failed: {dropped} message(s) dropped", peer=str(peer), dropped=dropped
            )
        self.streams.sink.connection_lost(peer)
        if server_name and server_name != peer.host:
            self.streams.sink.connection_lost(attrs.evolve(peer, host=server_name))


class TlsListener(TcpListener):
    """Listens for SIP over TLS on ``host:port`` while the service runs: the TCP listener
    serving the TLS edge's factory (the stream factory inside Twisted's TLS)."""

    transport = Transport.TLS

    def __init__(self, reactor: TcpReactor, host: str, port: int, edge: TlsEdge) -> None:
        super().__init__(reactor, host, port, edge.streams)
        self.edge = edge

    @override
    def server_factory(self) -> ServerFactory:
        return cast(ServerFactory, self.edge.listener_factory())
