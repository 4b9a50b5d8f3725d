"""Domains, realms, digest algorithms, refusals and what the server discloses before
authentication (the dispatcher and the Authenticator, pure)."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scaserver.config.errors import ConfigError
from scaserver.config.load import load_settings, settings_from_mapping
from scaserver.config.schema import UserAgentAlgorithms
from scaserver.directory import DirectoryError, digest_policy
from scaserver.metrics.counters import Metrics
from scaserver.sca.line import SharedLine
from scaserver.sip.actions import Action, Deliver, Send
from scaserver.sip.digest import Algorithm, Authenticated, Authenticator, Credentials, NonceFactory, Rejected
from scaserver.sip.digestclient import ClientCredentials, authorize, parse_challenges
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.endpoint import RequestRefused
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import cause_label
from scaserver.sip.serializer import serialize
from scaserver.sip.trust import TrustedPeer
from scaserver.store import migrate
from scaserver.store.sql import SqlStore
from tests.builders import DOMAIN, Wire, digest_authorization, make_core
from tests.unit.test_dispatch import ALICE, BOB, request

NOW = 1_000_000.0
GATEWAY = Peer(Transport.UDP, "203.0.113.5", 5060)


def refusals(actions: list[Action]) -> list[RequestRefused]:
    return [a.event for a in actions if isinstance(a, Deliver) and isinstance(a.event, RequestRefused)]


def without_nonces(response: Response) -> list[tuple[str, str]]:
    """The response's header fields with nonces and To tags blanked (they differ each time)."""
    fields = []
    for name, value in response.headers.fields:
        blanked = re.sub(r'nonce="[^"]*"', 'nonce="N"', value)
        fields.append((name, re.sub(r";tag=[^;>]*$", ";tag=T", blanked) if name == "To" else blanked))
    return fields


# ---------------------------------------------------------------- the domain policy


def test_configured_domains_are_the_whole_truth_about_names() -> None:
    policy = DomainPolicy(frozenset({"A.test"}), frozenset({"b.test"}), frozenset({"192.0.2.1"}))
    assert policy.rule_for("a.TEST") == "server.domains"
    assert policy.rule_for("b.test") is None  # a subscriber's domain is not ours when domains are configured
    assert policy.rule_for("192.0.2.1") == "server address"
    assert "not in server.domains (a.test)" in policy.why_not("b.test")


def test_without_configured_domains_the_directory_decides() -> None:
    policy = DomainPolicy(directory=frozenset({"example.test"}), addresses=frozenset({"127.0.0.1"}))
    assert policy.rule_for("Example.Test") == "directory"
    assert "example.test" in policy and "127.0.0.1" in policy
    assert "other.test" not in policy
    reason = policy.why_not("other.test")
    assert "'other.test' is not ours" in reason and "subscriber or line (example.test)" in reason


def test_an_empty_policy_says_nothing_is_configured() -> None:
    assert "no server.domains and no subscriber or line" in DomainPolicy().why_not("x.test")


# ---------------------------------------------------------------- realms


def authenticator(**kwargs: object) -> Authenticator:
    def lookup(username: str, realm: str) -> Credentials | None:
        table = {
            ("alice", "a.test"): Credentials.from_password("alice", "a.test", "pa"),
            ("bob", "b.test"): Credentials.from_password("bob", "b.test", "pb"),
            ("sam", "a.test"): Credentials.from_password(
                "sam", "a.test", "ps", algorithms=(Algorithm.SHA_256,)
            ),
        }
        return table.get((username, realm))

    counter = iter(range(1, 1_000_000))
    nonces = NonceFactory(b"s" * 32, lambda size: next(counter).to_bytes(size, "big"))
    defaults: dict[str, object] = {
        "domains": DomainPolicy(directory=frozenset({"a.test", "b.test"})),
        "algorithms": (Algorithm.MD5,),
    }
    defaults.update(kwargs)
    return Authenticator(lookup, nonces, "192.0.2.1", **defaults)  # type: ignore[arg-type]


def sip_request(method: str, aor: str, *, user_agent: str = "") -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 198.51.100.10:5062;branch=z9hG4bKx"),
        ("From", f"<{aor}>;tag=f"),
        ("To", f"<{aor}>"),
        ("Call-ID", "c1"),
        ("CSeq", f"1 {method}"),
    ]
    if user_agent:
        fields.append(("User-Agent", user_agent))
    uri = "sip:" + aor.partition("@")[2] if method == "REGISTER" else aor
    return Request(method, uri, Headers.of(*fields))


def answer(
    auth: Authenticator, req: Request, password: str, *, offer: int = 0, nonce_of: int | None = None
) -> object:
    """``req`` answered to the ``offer``-th challenge, optionally with another offer's nonce."""
    challenges = parse_challenges(auth.challenge(req, NOW).response(req))
    chosen = challenges[offer]
    if nonce_of is not None:
        chosen = attrs.evolve(chosen, nonce=challenges[nonce_of].nonce)
    user = (req.headers.get("To") or "").partition(":")[2].partition("@")[0]
    secrets = ClientCredentials.from_password(user, chosen.realm, password)
    return auth.authenticate(authorize(req, chosen, secrets, nc=1, cnonce="cn"), NOW)


def test_realm_is_the_domain_of_the_aor_so_two_domains_each_authenticate() -> None:
    auth = authenticator()
    alice = sip_request("REGISTER", "sip:alice@a.test")
    bob = sip_request("INVITE", "sip:bob@b.test")
    assert auth.realm_for(alice) == "a.test" and auth.realm_for(bob) == "b.test"
    assert isinstance(answer(auth, alice, "pa"), Authenticated)
    assert isinstance(answer(auth, bob, "pb"), Authenticated)


def test_auth_realm_forces_one_realm() -> None:
    auth = authenticator(forced_realm="corp")
    assert auth.realm_for(sip_request("REGISTER", "sip:alice@a.test")) == "corp"


def test_a_domain_not_ours_gets_the_default_realm() -> None:
    assert authenticator().realm_for(sip_request("REGISTER", "sip:eve@c.test")) == "192.0.2.1"


# ---------------------------------------------------------------- algorithms and nonces


def test_md5_alone_is_offered_by_default() -> None:
    challenge = authenticator().challenge(sip_request("REGISTER", "sip:alice@a.test"), NOW)
    assert [
        c.algorithm for c in parse_challenges(challenge.response(sip_request("REGISTER", "sip:x@a.test")))
    ] == [Algorithm.MD5]


def test_a_sha256_only_subscriber_is_offered_sha256_alone() -> None:
    req = sip_request("REGISTER", "sip:sam@a.test")
    offers = parse_challenges(authenticator().challenge(req, NOW).response(req))
    assert [c.algorithm for c in offers] == [Algorithm.SHA_256]


def test_a_user_agent_rule_chooses_the_offer() -> None:
    auth = authenticator(user_agent_algorithms=(("linphone", (Algorithm.SHA_256, Algorithm.MD5)),))
    req = sip_request("REGISTER", "sip:alice@a.test", user_agent="Linphone/5.2 (belle-sip/5.2)")
    offers = parse_challenges(auth.challenge(req, NOW).response(req))
    assert [c.algorithm for c in offers] == [Algorithm.SHA_256, Algorithm.MD5]
    assert offers[0].nonce != offers[1].nonce


def test_an_md5_answer_to_a_sha256_nonce_is_refused() -> None:
    auth = authenticator(algorithms=(Algorithm.SHA_256, Algorithm.MD5))
    req = sip_request("REGISTER", "sip:alice@a.test")
    assert isinstance(answer(auth, req, "pa", offer=1), Authenticated)  # MD5 with its own nonce
    refused = answer(auth, req, "pa", offer=1, nonce_of=0)  # MD5 computed over the SHA-256 nonce
    assert isinstance(refused, Rejected) and refused.status == 401 and not refused.stale


def test_a_sha256_only_subscriber_never_has_an_md5_answer_accepted() -> None:
    auth = authenticator(algorithms=(Algorithm.MD5,))
    req = sip_request("REGISTER", "sip:sam@a.test")
    # A client that ignores the offer and answers MD5 over a nonce issued for MD5.
    nonce = auth.nonces.issue("a.test", NOW, "MD5")
    md5 = parse_challenges(
        Response(
            401,
            "Unauthorized",
            Headers.of(
                ("WWW-Authenticate", f'Digest realm="a.test", nonce="{nonce}", algorithm=MD5, qop="auth"')
            ),
        )
    )[0]
    secrets = ClientCredentials.from_password("sam", "a.test", "ps")
    result = auth.authenticate(authorize(req, md5, secrets, nc=1, cnonce="cn"), NOW)
    assert isinstance(result, Rejected) and result.status == 401
    assert isinstance(answer(auth, req, "ps"), Authenticated)  # SHA-256 is


# ---------------------------------------------------------------- refusals


def test_every_error_response_of_a_transaction_is_one_refusal_fact() -> None:
    core = make_core(require_auth=False)
    text = request("INVITE", "sip:nobody@example.com")
    actions = core.receive(text.encode(), ALICE, NOW)
    [fact] = refusals(actions)
    assert (fact.method, fact.status, fact.cause, fact.call_id) == ("INVITE", 404, "not-found", "call-1")
    assert fact.detail == "no such user here" and fact.peer == ALICE


def test_a_stateless_400_is_one_refusal_fact() -> None:
    text = request("OPTIONS", f"sip:{DOMAIN}").replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS")
    [fact] = refusals(make_core().receive(text.encode(), ALICE, NOW))
    assert (fact.method, fact.status, fact.cause) == ("OPTIONS", 400, "malformed-message")
    assert fact.detail == "CSeq number is not a number: 'x'"


def test_a_foreign_domain_is_refused_naming_the_domain_and_the_rule() -> None:
    core = make_core(require_auth=False)
    [fact] = refusals(core.receive(request("INVITE", "sip:bob@elsewhere.test").encode(), ALICE, NOW))
    assert fact.status == 403
    assert "'elsewhere.test' is not ours" in fact.detail and "server.domains" in fact.detail


def test_a_challenge_is_a_refusal_fact_naming_digest_and_the_realm() -> None:
    [fact] = refusals(make_core().receive(request("INVITE", f"sip:bob@{DOMAIN}").encode(), ALICE, NOW))
    assert (fact.status, fact.cause) == (407, "digest-challenge")
    assert "realm 'example.com'" in fact.detail


def register_trusted(wire: Wire, user: str, peer: Peer) -> None:
    """A REGISTER of ``user`` from a trusted ``peer`` (no challenge)."""
    text = request(
        "REGISTER",
        f"sip:{DOMAIN}",
        peer=peer,
        from_uri=f"sip:{user}@{DOMAIN}",
        to_uri=f"sip:{user}@{DOMAIN}",
        call_id=f"reg-{user}",
        branch=f"z9hG4bKreg{user}",
        extra="Expires: 600\r\n",
    )
    [(response, _)] = wire.deliver(text, peer)
    assert isinstance(response, Response) and response.status == 200


def test_a_relayed_error_from_a_downstream_ua_is_not_our_refusal() -> None:
    wire = Wire(make_core(require_auth=False))
    register_trusted(wire, "bob", BOB)
    [branch] = [
        m for m, _ in wire.deliver(request("INVITE", f"sip:bob@{DOMAIN}"), ALICE) if isinstance(m, Request)
    ]
    busy = Response(486, "Busy Here", branch.headers.set("To", f"{branch.headers.get('To')};tag=b1"))
    actions = wire.core.receive(serialize(busy), BOB, wire.now)
    assert [a for a in actions if isinstance(a, Send) and isinstance(a.message, Response)]  # relayed
    assert refusals(actions) == []


def test_cause_labels_are_bounded_words() -> None:
    assert cause_label("NotFound") == cause_label("Not Found") == "not-found"
    assert cause_label("TooManyContacts") == "too-many-contacts"


def test_proxy_require_is_answered_420_before_authentication_is_asked_for() -> None:
    text = request("INVITE", f"sip:bob@{DOMAIN}", extra="Proxy-Require: x-unknown\r\n")
    response, _ = Wire(make_core()).deliver(text, ALICE)[0]
    assert isinstance(response, Response)
    assert response.status == 420 and response.headers.get("Unsupported") == "x-unknown"


# ---------------------------------------------------------------- no disclosure


def test_options_to_any_user_is_challenged_registered_or_not_existing_or_not() -> None:
    wire = Wire(make_core(trusted=[TrustedPeer("198.51.100.20/32")]))
    register_trusted(wire, "bob", BOB)
    replies = []
    for user in ("bob", "carol", "nobody"):
        [(response, _)] = wire.deliver(request("OPTIONS", f"sip:{user}@{DOMAIN}", call_id="same"), ALICE)
        assert isinstance(response, Response)
        replies.append((response.status, without_nonces(response)))
    assert [status for status, _ in replies] == [407, 407, 407]
    assert replies[0][1] == replies[1][1] == replies[2][1]


def test_options_to_the_server_itself_is_200_without_a_challenge() -> None:
    [(response, _)] = Wire(make_core()).deliver(request("OPTIONS", f"sip:{DOMAIN}"), ALICE)
    assert isinstance(response, Response) and response.status == 200


def test_an_authenticated_options_to_an_unregistered_user_is_answered_by_us() -> None:
    wire = Wire(make_core())
    text = request("OPTIONS", f"sip:carol@{DOMAIN}")
    [(challenge, _)] = wire.deliver(text, ALICE)
    assert isinstance(challenge, Response) and challenge.status == 407
    answered = digest_authorization(parse_message(text.encode()), challenge, "alice", "alice-secret")  # type: ignore[arg-type]
    answered = answered.with_headers(
        answered.headers.set("Via", "SIP/2.0/UDP 198.51.100.10:5062;branch=z9hG4bKo2;rport").set(
            "CSeq", "2 OPTIONS"
        )
    )
    [(response, _)] = wire.send(answered, ALICE)
    assert isinstance(response, Response) and response.status == 200


def test_subscribe_to_a_line_with_another_event_is_challenged_like_any_other_name() -> None:
    wire = Wire(make_core(lines=[SharedLine(f"sip:2001@{DOMAIN}", 2)]))
    replies = []
    for user in ("2001", "carol"):
        text = request("SUBSCRIBE", f"sip:{user}@{DOMAIN}", extra="Event: presence\r\nExpires: 60\r\n")
        [(response, _)] = wire.deliver(text, ALICE)
        assert isinstance(response, Response)
        replies.append(response.status)
    assert replies == [401, 401]


def test_register_replies_are_the_same_for_known_and_unknown_users() -> None:
    wire = Wire(make_core())
    replies = []
    for user in ("alice", "nobody"):
        text = request(
            "REGISTER",
            f"sip:{DOMAIN}",
            from_uri=f"sip:{user}@{DOMAIN}",
            to_uri=f"sip:{user}@{DOMAIN}",
            call_id="r",
        ).replace(f"Contact: <sip:{user}@", "Contact: <sip:x@")
        [(response, _)] = wire.deliver(text, ALICE)
        assert isinstance(response, Response)
        replies.append((response.status, without_nonces(response)))
    assert replies[0] == replies[1]


# ---------------------------------------------------------------- configuration and directory


def test_md5_is_the_default_offer_and_user_agent_rules_are_read() -> None:
    assert load_settings(None).auth.algorithms == ("MD5",)
    auth = settings_from_mapping(
        {"auth": {"user_agents": [{"match": "Linphone", "algorithms": ["SHA-256", "MD5"]}]}}, "t.toml"
    ).auth
    assert auth.user_agents == (UserAgentAlgorithms("Linphone", ("SHA-256", "MD5")),)


def test_a_user_agent_rule_with_an_unknown_algorithm_names_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"auth": {"user_agents": [{"match": "x", "algorithms": ["SHA-1"]}]}}, "t.toml")
    assert "auth.user_agents[0].algorithms" in str(caught.value) and "SHA-1" in str(caught.value)


def test_the_cli_digest_policy_is_parsed_and_refused_when_unknown() -> None:
    assert digest_policy(None) == digest_policy("default") == ()
    assert digest_policy("sha-256, MD5") == (Algorithm.SHA_256, Algorithm.MD5)
    with pytest.raises(DirectoryError):
        digest_policy("SHA-1")


def test_the_subscriber_policy_survives_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    migrate.upgrade(url)
    store = SqlStore(url)
    try:
        store.subscribers.upsert(
            [
                Credentials.from_password("sam", "a.test", "p", algorithms=(Algorithm.SHA_256,)),
                Credentials.from_password("al", "a.test", "p"),
            ]
        )
        loaded = {c.username: c.algorithms for c in store.subscribers.load_all()}
    finally:
        store.close()
    assert loaded == {"sam": (Algorithm.SHA_256,), "al": ()}


def test_a_registrar_refusal_is_a_refusal_fact_naming_the_domain() -> None:
    core = make_core(trusted=[TrustedPeer("198.51.100.10/32")])
    text = request(
        "REGISTER",
        "sip:elsewhere.test",
        from_uri="sip:alice@elsewhere.test",
        to_uri="sip:alice@elsewhere.test",
    )
    [fact] = refusals(core.receive(text.encode(), ALICE, NOW))
    assert (fact.method, fact.status, fact.cause) == ("REGISTER", 404, "not-found")
    assert "'elsewhere.test' is not ours: not in server.domains (example.com)" in fact.detail


def test_invite_replies_are_the_same_for_known_and_unknown_users() -> None:
    wire = Wire(make_core())
    replies = []
    for user in ("bob", "nobody"):
        [(response, _)] = wire.deliver(request("INVITE", f"sip:{user}@{DOMAIN}", call_id="i"), ALICE)
        assert isinstance(response, Response)
        replies.append((response.status, without_nonces(response)))
    assert replies[0][0] == 407 and replies[0] == replies[1]


def test_refusals_are_counted_by_status_and_reason() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.request_refused(404, "not-found")
    metrics.request_refused(404, "not-found")
    scrape = generate_latest(metrics.registry).decode()
    assert 'scaserver_sip_responses_refused_total{reason="not-found",status="404"} 2.0' in scrape
