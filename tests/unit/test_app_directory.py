"""A reloaded directory swapped into the running core: credentials, trusted peers, which
domains are ours and the shared lines, in one step, with live subscriptions left alone."""

from __future__ import annotations

from scaserver.app import apply_directory, make_core
from scaserver.config.schema import ServerSettings, Settings, UpstreamSettings
from scaserver.directory import credential_lookup, line_aliases
from scaserver.edge.directorywatch import Directory
from scaserver.router.router import SipRouter
from scaserver.sca.line import LineAlias, SharedLine
from scaserver.sca.settings import ConfiguredAlias, ConfiguredLine, ScaSettings
from scaserver.sca.subscription import Package, Subscription
from scaserver.sip.digest import Credentials
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.trust import TrustedPeer, TrustedPeers

ALICE = Credentials.from_password("alice", "example.test", "a")
BOB = Credentials.from_password("bob", "example.test", "b")
KEPT = SharedLine("sip:2001@example.test", 2, frozenset({"alice"}))
GONE = SharedLine("sip:2002@example.test", 2, frozenset({"bob"}))
PBX = Peer(Transport.UDP, "192.0.2.7", 5060)


def core(settings: Settings, directory: Directory) -> SipRouter:
    return make_core(
        settings,
        credentials=credential_lookup(directory.credentials),
        trusted=TrustedPeers(directory.trusted),
        lines=list(directory.lines),
        secret=b"s",
        directory={c.realm for c in directory.credentials},
    )


def test_with_no_server_domains_the_new_directory_decides_everything() -> None:
    settings = Settings()
    before = Directory(1, (BOB,), (), (GONE,))
    sip = core(settings, before)
    assert "example.test" in sip.settings.domains
    assert "other.test" not in sip.settings.domains
    after = Directory(
        2,
        (ALICE, Credentials.from_password("carol", "other.test", "c")),
        (TrustedPeer("192.0.2.0/24"),),
        (KEPT,),
    )
    apply_directory(settings, sip, after)
    assert sip.authenticator.lookup("alice", "example.test") == ALICE
    assert sip.authenticator.lookup("bob", "example.test") is None
    assert sip.trusted.is_trusted(PBX)
    for policy in (sip.settings.domains, sip.authenticator.domains, sip.registrar.policy.domains):
        assert "other.test" in policy
        assert "example.test" in policy
    assert [line.aor for line in sip.sca.provisioned()] == [KEPT.aor]


def test_a_domain_whose_last_subscriber_and_line_went_is_no_longer_ours() -> None:
    settings = Settings()
    sip = core(settings, Directory(1, (BOB,), (), ()))
    apply_directory(settings, sip, Directory(2, (), (), ()))
    assert "example.test" not in sip.settings.domains
    assert "example.test" not in sip.registrar.policy.domains


def test_server_domains_stay_the_whole_truth_after_a_reload() -> None:
    settings = Settings(server=ServerSettings(domains=("example.test",)))
    sip = core(settings, Directory(1, (), (), ()))
    apply_directory(settings, sip, Directory(2, (Credentials.from_password("x", "other.test", "p"),), (), ()))
    assert "other.test" not in sip.settings.domains
    assert "example.test" in sip.settings.domains


def test_the_upstream_stays_trusted_and_configured_lines_stay_provisioned() -> None:
    settings = Settings(
        upstream=UpstreamSettings(host="192.0.2.9", port=5070, transport=Transport.UDP),
        sca=ScaSettings(lines=(ConfiguredLine(aor="sip:3000@example.test", members=("alice",)),)),
    )
    sip = core(settings, Directory(1, (ALICE,), (), ()))
    apply_directory(settings, sip, Directory(2, (ALICE,), (), (KEPT,)))
    assert sip.trusted.is_trusted(Peer(Transport.UDP, "192.0.2.9", 5070))
    assert sorted(line.aor for line in sip.sca.provisioned()) == [
        "sip:2001@example.test",
        "sip:3000@example.test",
    ]


def test_live_subscriptions_of_lines_that_stay_are_untouched() -> None:
    settings = Settings()
    sip = core(settings, Directory(1, (ALICE,), (), (KEPT, GONE)))
    subscription = Subscription(
        "sip:alice@192.0.2.1", KEPT.aor, Package.CALL_INFO, 1e9, "call", "from", "to", owner="alice"
    )
    sip.sca.restore([KEPT, GONE], [subscription], [], 0.0)
    live = sip.sca.subscription(subscription.key)
    assert live is not None
    apply_directory(settings, sip, Directory(2, (ALICE,), (), (with_bob(KEPT),)))
    assert sip.sca.subscription(subscription.key) == live
    assert [line.members for line in sip.sca.provisioned()] == [frozenset({"alice", "bob"})]


def test_a_member_added_by_a_reload_may_act_as_the_line() -> None:
    settings = Settings()
    sip = core(settings, Directory(1, (ALICE, BOB), (), (KEPT,)))
    assert not sip.authenticator.may_act_as("bob", "example.test", "2001")
    apply_directory(settings, sip, Directory(2, (ALICE, BOB), (), (with_bob(KEPT),)))
    assert sip.authenticator.may_act_as("bob", "example.test", "2001")


def with_bob(line: SharedLine) -> SharedLine:
    return SharedLine(line.aor, line.appearances, line.members | {"bob"}, line.push_members)


# -- line aliases (sca.md Q26): configuration and database, merged, on every reload ------------

ALIAS = "sip:100@example.test"


def test_a_reloaded_alias_of_another_domain_reaches_its_line_and_makes_the_domain_ours() -> None:
    settings = Settings()
    sip = core(settings, Directory(1, (ALICE,), (), (KEPT,)))
    assert "gw.other.test" not in sip.settings.domains
    stored = (LineAlias(ALIAS, KEPT.aor), LineAlias("sip:+15551000@gw.other.test", KEPT.aor))
    apply_directory(settings, sip, Directory(2, (ALICE,), (), (KEPT,), stored))
    assert "gw.other.test" in sip.settings.domains
    assert "gw.other.test" in sip.registrar.policy.domains
    assert sip.sca.ringing_call_info(invite_to("sip:+15551000@gw.other.test")) is not None
    assert sip.sca.ringing_call_info(invite_to(ALIAS)) == "<sip:example.test>;appearance-index=1"
    apply_directory(settings, sip, Directory(3, (ALICE,), (), (KEPT,)))
    assert sip.sca.ringing_call_info(invite_to(ALIAS)) is None
    assert "gw.other.test" not in sip.settings.domains


def test_configured_aliases_are_canonical_and_win_over_the_database() -> None:
    configured = SharedLine("sip:3000@config.test", 2)
    settings = Settings(
        sca=ScaSettings(
            lines=(ConfiguredLine(aor=configured.aor),),
            aliases=(ConfiguredAlias(alias="sip:100@EXAMPLE.test:5060", line=configured.aor),),
        )
    )
    stored = (LineAlias(ALIAS, KEPT.aor), LineAlias("sip:101@example.test", KEPT.aor))
    assert line_aliases(settings.sca.aliases, stored, [KEPT, configured]) == {
        ALIAS: configured.aor,
        "sip:101@example.test": KEPT.aor,
    }
    sip = make_core(
        settings,
        credentials=credential_lookup(()),
        trusted=TrustedPeers(()),
        lines=[KEPT, configured],
        secret=b"s",
    )
    assert sip.sca.ringing_call_info(invite_to(ALIAS)) == "<sip:config.test>;appearance-index=1"
    apply_directory(settings, sip, Directory(2, (ALICE,), (), (KEPT,), stored))
    assert sip.sca.ringing_call_info(invite_to(ALIAS)) == "<sip:config.test>;appearance-index=1"
    assert sip.sca.ringing_call_info(invite_to("sip:101@example.test")) == (
        "<sip:example.test>;appearance-index=1"
    )


def test_a_stored_alias_that_is_a_line_or_names_an_alias_is_left_out() -> None:
    settings = Settings(
        sca=ScaSettings(aliases=(ConfiguredAlias(alias="sip:200@example.test", line=KEPT.aor),))
    )
    stored = (LineAlias(GONE.aor, KEPT.aor), LineAlias("sip:300@example.test", "sip:200@example.test"))
    assert line_aliases(settings.sca.aliases, stored, [KEPT, GONE]) == {"sip:200@example.test": KEPT.aor}


def invite_to(uri: str) -> Request:
    message = parse_message(
        (
            f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKx\r\n"
            f"From: <sip:dave@pstn.test>;tag=f\r\nTo: <{uri}>\r\nCall-ID: alias-1\r\n"
            "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message
