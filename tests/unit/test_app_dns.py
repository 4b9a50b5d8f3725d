"""What check-config says about upstream names, and the locator's wiring from ``[dns]``."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from scaserver.app import upstream_peer
from scaserver.config.checks import upstream_problems
from scaserver.config.load import load_settings
from scaserver.config.schema import Settings, UpstreamSettings
from scaserver.edge.dns import DnsSettings, server_locator
from scaserver.edge.resolver import HostsTable, resolvable_in
from scaserver.registrar.midregsettings import MidRegistrarSettings
from scaserver.sip.message import Peer, Transport

HOSTS = HostsTable.parse("192.0.2.5 pbx.local\n")


def no_dns(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text("search example\n")
    return path


def test_a_name_outside_the_hosts_file_without_dns_is_refused(tmp_path: Path) -> None:
    settings = Settings(upstream=UpstreamSettings(host="pbx.example.com"))
    assert upstream_problems(settings, HOSTS, resolv_conf=no_dns(tmp_path)) == [
        ("upstream.host", "pbx.example.com: not in the hosts file and no DNS server is configured")
    ]


def test_a_name_is_accepted_when_dns_is_configured(tmp_path: Path) -> None:
    settings = Settings(
        upstream=UpstreamSettings(host="pbx.example.com", port=0), dns=DnsSettings(servers=("127.0.0.1",))
    )
    assert upstream_problems(settings, HOSTS, resolv_conf=no_dns(tmp_path)) == []


def test_a_name_from_resolv_conf_counts_as_dns(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    settings = Settings(upstream=UpstreamSettings(host="pbx.example.com"))
    assert upstream_problems(settings, HOSTS, resolv_conf=conf) == []


def test_a_host_that_is_no_name_is_refused_even_with_dns(tmp_path: Path) -> None:
    settings = Settings(upstream=UpstreamSettings(host="pbx..bad"), dns=DnsSettings(servers=("127.0.0.1",)))
    assert upstream_problems(settings, HOSTS, resolv_conf=no_dns(tmp_path)) == [
        ("upstream.host", "pbx..bad: not a host name")
    ]


def test_hosts_file_names_addresses_and_no_upstream_pass(tmp_path: Path) -> None:
    for host in ("pbx.local", "192.0.2.9", "", "[2001:db8::1]"):
        settings = Settings(upstream=UpstreamSettings(host=host))
        assert upstream_problems(settings, HOSTS, resolv_conf=no_dns(tmp_path)) == []


def test_midregistrar_upstream_name_without_dns_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        midregistrar=MidRegistrarSettings(enabled=True, upstream="sip:reg.example.com;transport=tcp")
    )
    assert upstream_problems(settings, HOSTS, resolv_conf=no_dns(tmp_path)) == [
        ("midregistrar.upstream", "reg.example.com: not in the hosts file and no DNS server is configured")
    ]


def test_known_host_accepts_names_only_with_dns() -> None:
    assert not resolvable_in(HOSTS)("pbx.example.com")
    assert resolvable_in(HOSTS, dns=True)("pbx.example.com")
    assert not resolvable_in(HOSTS, dns=True)("bad host")
    assert not resolvable_in(HOSTS, dns=True)("nowhere.invalid")  # RFC 6761 6.4
    assert resolvable_in(HOSTS)("pbx.local")


def test_upstream_port_zero_is_srv_for_a_name_and_the_default_for_an_address() -> None:
    assert upstream_peer(Transport.TCP, "pbx.example.com", 0) == Peer(Transport.TCP, "pbx.example.com", 0)
    assert upstream_peer(Transport.UDP, "192.0.2.1", 0) == Peer(Transport.UDP, "192.0.2.1", 5060)
    assert upstream_peer(Transport.TLS, "192.0.2.1", 0) == Peer(Transport.TLS, "192.0.2.1", 5061)


def test_locator_from_dns_settings() -> None:
    locator = server_locator(DnsSettings(servers=("127.0.0.1:5353",), failed_target_hold=7.0), Clock(), HOSTS)
    assert locator is not None
    assert locator.policy.failed_target_hold == 7.0


def test_upstream_transport_empty_means_rfc_3263_decides(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[upstream]\nhost = "pbx.example.com"\nport = 0\ntransport = ""\n')
    assert load_settings(path).upstream == UpstreamSettings(host="pbx.example.com", port=0, transport=None)
    path.write_text('[upstream]\ntransport = "TCP"\n')
    assert load_settings(path).upstream.transport is Transport.TCP
    assert Settings().upstream.transport is Transport.UDP  # unset: as before
