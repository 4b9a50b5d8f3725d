"""The pure parts of the TLS edge: certificate names (RFC 5922), the name to verify, the
contexts' versions and suites, reload keeping the old certificate on error."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from cryptography import x509
from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from scaserver.config.errors import ConfigError
from scaserver.config.load import settings_from_mapping
from scaserver.edge.stack import Transports
from scaserver.edge.tcp import SipStreamFactory
from scaserver.edge.tls import (
    CertificateNames,
    TlsCertificates,
    TlsConfigurationError,
    TlsEdge,
    TlsSettings,
    client_context,
    failure_reason,
    server_context,
    verification_name,
)
from scaserver.sip.message import Peer, Transport
from tests.system.pki import TestAuthority
from tests.unit.edge.doubles import RecordingSink
from tests.unit.edge.test_tcp import LIMITS, FakeTcpReactor


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TestAuthority:
    return TestAuthority(tmp_path_factory.mktemp("pki"))


def test_a_sip_uri_san_names_its_domain() -> None:
    names = CertificateNames(uris=("sip:example.com",), dns=(), common_names=("other.example",))
    assert names.names_domain("EXAMPLE.com")
    assert not names.names_domain("other.example")  # the CN is ignored when there are SANs


def test_a_dns_san_names_its_domain_and_wildcards_do_not_match() -> None:
    names = CertificateNames(dns=("pbx.example.com", "*.example.net"))
    assert names.names_domain("pbx.example.com")
    assert not names.names_domain("a.example.net")


def test_the_cn_counts_only_without_sans() -> None:
    assert CertificateNames(common_names=("pbx.example.com",)).names_domain("pbx.example.com")


def test_a_user_uri_san_is_not_a_domain_identity() -> None:
    assert not CertificateNames(uris=("sip:alice@example.com",)).names_domain("example.com")


def test_names_are_read_from_a_real_certificate(authority: TestAuthority) -> None:
    issued = authority.issue(
        "names", common_name="cn.example", dns=("pbx.example",), uris=("sip:dom.example",)
    )

    names = CertificateNames.of(x509.load_pem_x509_certificate(issued.certificate.read_bytes()))
    assert names.identities() == frozenset({"pbx.example", "dom.example"})


def test_verification_name_is_the_host_name_then_the_configured_name() -> None:
    settings = TlsSettings()
    assert verification_name("pbx.example.com", settings) == "pbx.example.com"
    assert verification_name("192.0.2.1", settings) is None  # refused: nothing to verify against
    assert verification_name("192.0.2.1", attrs.evolve(settings, server_name="pbx.example")) == "pbx.example"
    assert verification_name("[2001:db8::1]", attrs.evolve(settings, verify_numeric_hosts=False)) == ""


def test_server_context_refuses_old_versions_and_offers_aead_suites_only(authority: TestAuthority) -> None:
    issued = authority.issue("ctx", common_name="ctx.example", dns=("ctx.example",))
    settings = TlsSettings(certificate=str(issued.certificate), key=str(issued.key))
    context = server_context(settings)
    options = context.set_options(0)  # adds nothing, returns the options in force
    connection = SSL.Connection(context, None)
    suites = connection.get_cipher_list()
    assert suites, suites
    tls12 = [suite for suite in suites if not suite.startswith("TLS_")]
    assert all(suite.startswith("ECDHE-") for suite in tls12), tls12
    assert all(("GCM" in suite or "CHACHA20" in suite) for suite in tls12), tls12
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_NO_RENEGOTIATION


def test_a_missing_key_is_a_configuration_error(tmp_path: Path, authority: TestAuthority) -> None:
    issued = authority.issue("nokey", common_name="x.example")
    settings = TlsSettings(certificate=str(issued.certificate), key=str(tmp_path / "none.key"))
    with pytest.raises(TlsConfigurationError):
        server_context(settings)


def test_a_key_of_another_certificate_is_refused(authority: TestAuthority) -> None:
    one = authority.issue("one", common_name="one.example")
    two = authority.issue("two", common_name="two.example")
    with pytest.raises(TlsConfigurationError):
        server_context(TlsSettings(certificate=str(one.certificate), key=str(two.key)))


def test_reload_keeps_the_current_certificate_when_the_new_one_is_broken(authority: TestAuthority) -> None:
    issued = authority.issue("reload", common_name="reload.example")
    certificates = TlsCertificates(TlsSettings(certificate=str(issued.certificate), key=str(issued.key)))
    before = certificates.context
    issued.key.write_text("not a key")
    assert not certificates.reload()
    assert certificates.context is before
    assert certificates.generation == 1


def test_client_context_uses_the_ca_bundle(authority: TestAuthority) -> None:
    assert client_context(TlsSettings(ca_file=str(authority.ca_file))) is not None
    with pytest.raises(TlsConfigurationError):
        client_context(TlsSettings(ca_file="/nonexistent/ca.pem"))


def failure(error: Exception) -> Failure:
    return Failure(error)  # type: ignore[no-untyped-call]


def test_failure_reasons() -> None:
    assert failure_reason(None) == "closed"
    assert failure_reason(failure(ConnectionResetError())) == "closed"
    error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert failure_reason(failure(error)) == "certificate"
    assert failure_reason(failure(SSL.Error([("SSL routines", "", "unsupported protocol")]))) == "protocol"


# ----------------------------------------------------------------------------- configuration


def test_no_tls_table_means_no_tls() -> None:
    settings = settings_from_mapping({}, "defaults")
    assert settings.tls.listen == ()
    assert not settings.tls.enabled
    assert not settings.http.https(settings.tls)


def test_tls_listen_defaults_to_port_5061(authority: TestAuthority) -> None:
    issued = authority.issue("cfg", common_name="cfg.example")
    table = {"listen": ["127.0.0.1"], "certificate": str(issued.certificate), "key": str(issued.key)}
    settings = settings_from_mapping({"tls": table}, "t")
    assert [(e.host, e.port) for e in settings.tls.listen] == [("127.0.0.1", 5061)]
    assert settings.http.https(settings.tls)  # "auto": HTTPS once a certificate is configured


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"listen": ["127.0.0.1:5061"]}, "t: tls.certificate: required by tls.listen"),
        ({"min_version": "1.1"}, 't: tls.min_version: expected "1.2" or "1.3"'),
        ({"trusted_names": ["pbx.example"]}, "t: tls.trusted_names: needs verify_clients = true"),
        ({"verify_clients": True}, "t: tls.verify_clients: needs tls.ca_file"),
        ({"certificate": "/etc/hostname"}, "t: tls.key: tls.certificate and tls.key go together"),
        ({"handshake_timeout": 0}, "t: tls.handshake_timeout: must be positive"),
    ],
)
def test_tls_configuration_refusals(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"tls": table}, "t")
    assert str(caught.value) == message


def test_a_numeric_tls_upstream_needs_a_name_to_verify() -> None:
    upstream = {"host": "192.0.2.5", "transport": "tls", "port": 5061}
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"upstream": upstream}, "t")
    assert str(caught.value).startswith("t: upstream.host: a numeric TLS upstream has no name")
    named = settings_from_mapping({"upstream": upstream, "tls": {"server_name": "pbx.example"}}, "t")
    assert named.tls.server_name == "pbx.example"


def test_http_tls_on_needs_a_certificate() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"http": {"tls": "on"}}, "t")
    assert str(caught.value) == "t: tls.certificate: required by http.tls"


def test_provisioning_urls_say_https_once_tls_is_configured(authority: TestAuthority) -> None:
    from scaserver.controlroot import site_settings  # noqa: PLC0415 (the composition root, for one test)

    issued = authority.issue("prov", common_name="prov.example")
    plain = settings_from_mapping({}, "t")
    assert site_settings(plain).prov_base_url.startswith("http://")
    table = {"listen": ["127.0.0.1:5071"], "certificate": str(issued.certificate), "key": str(issued.key)}
    secure = settings_from_mapping({"tls": table, "provisioning": {"sip_transport": "tls"}}, "t")
    assert site_settings(secure).prov_base_url.startswith("https://127.0.0.1:8080/")
    assert site_settings(secure).sip_port == 5071


def test_an_outgoing_tls_connection_gets_the_configured_connect_timeout() -> None:
    assert TlsSettings().connect_timeout == 10.0  # the default, also without a [tls] table
    settings = settings_from_mapping(
        {"tls": {"connect_timeout": 2.5, "verify_numeric_hosts": False}}, "t"
    ).tls
    reactor = FakeTcpReactor()
    edge = TlsEdge(settings, SipStreamFactory(RecordingSink(), Transports(), LIMITS, Clock()), reactor)
    edge.dial(Peer(Transport.TLS, "192.0.2.99", 5061), "")
    [(host, port, _, timeout)] = reactor.connects
    assert (host, port, timeout) == ("192.0.2.99", 5061, 2.5)


def test_a_connect_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"tls": {"connect_timeout": 0}}, "t")
    assert str(caught.value) == "t: tls.connect_timeout: must be positive"
