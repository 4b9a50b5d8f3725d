"""RFC 4475 at the server's level: what scaserver answers to each torture message.

The message layer's verdicts are in test_rfc4475.py; here each file goes through the
whole pure core (dispatcher, transaction layer, registrar, proxy) for the domain
``example.com`` that most messages name, as it would arrive in one UDP datagram, and
the answer is checked against EXPECTED.md's "our server" column.  ``None`` means no
answer at all (a response, or a message nothing can be answered to).
"""

from __future__ import annotations

import pytest

from scaserver.registrar.binding import Binding
from scaserver.router.router import SipRouter
from scaserver.sip.message import Peer, Request, Response, Transport
from scaserver.sip.trust import TrustedPeer
from tests.builders import make_core, sent
from tests.conformance.corpus import corpus_dir

SOURCE = Peer(Transport.UDP, "192.0.2.99", 5060)
RELAYED = 0
"""Expected outcome: forwarded (not answered)."""

# file -> (status with digest authentication on, status with it off); None = no answer,
# RELAYED = forwarded without an answer of ours.
EXPECTED: dict[str, tuple[int | None, int | None]] = {
    # 3.1.1 valid messages: processed normally (challenged, proxied, answered), never 400.
    "wsinv.dat": (404, 404),  # in-dialog, not routed through us: never relayed
    "intmeth.dat": (501, 501),  # unknown method: 501 with Allow
    "esc01.dat": (407, 403),  # another domain, no upstream configured: no relay
    "escnull.dat": (401, 200),  # two bindings stored
    "esc02.dat": (501, 501),  # RE%47IST%45R is not REGISTER
    "lwsdisp.dat": (407, 200),  # OPTIONS to a user of ours: challenged alike, registered or not
    "longreq.dat": (407, 404),
    "dblreq.dat": (401, 200),  # the REGISTER only
    "semiuri.dat": (407, 200),
    "transports.dat": (407, 200),
    "mpart01.dat": (403, 403),  # a pre-loaded Route from an untrusted peer: relay rule R4
    "unreason.dat": (None, None),  # responses matching nothing are dropped
    "noreason.dat": (None, None),
    # 3.1.2 invalid messages
    "badinv01.dat": (400, 400),
    "clerr.dat": (400, 400),
    "ncl.dat": (400, 400),
    "scalar02.dat": (400, 400),
    "scalarlg.dat": (None, None),
    "quotbal.dat": (400, 400),
    "ltgtruri.dat": (400, 400),
    "lwsruri.dat": (400, 400),
    "lwsstart.dat": (400, 400),
    "trws.dat": (400, 400),
    "escruri.dat": (400, 400),
    "baddate.dat": (407, 404),  # Date is not used: processed normally
    "regbadct.dat": (400, 400),
    "badaspec.dat": (407, 403),  # liberal: the spaces inside <> are ignored; another domain
    "baddn.dat": (None, None),  # no empty line ends the headers: truncated, dropped
    "badvers.dat": (505, 505),
    "mismatch01.dat": (400, 400),
    "mismatch02.dat": (400, 400),  # 400 is acceptable (the CSeq method check comes first)
    "bigcode.dat": (None, None),
    # 3.2 transaction layer
    "badbranch.dat": (400, 400),
    # 3.3 application-layer semantics
    "insuf.dat": (400, 400),
    "unkscm.dat": (416, 416),
    "novelsc.dat": (416, 416),
    "unksm2.dat": (400, 400),  # the registrar refuses a non-SIP AoR, before any challenge
    "bext01.dat": (420, 420),  # to us as UAS: Unsupported lists the Require options
    "invut.dat": (407, 404),
    "regaut01.dat": (401, 200),  # an unknown scheme is never "authenticated"
    "multi01.dat": (400, 400),
    "mcl01.dat": (400, 400),
    "bcast.dat": (None, None),  # a response: dropped, never sent to broadcast
    "zeromf.dat": (407, 200),  # OPTIONS to a user: challenged like any (Max-Forwards 0 is fine)
    "cparam01.dat": (401, 200),
    "cparam02.dat": (401, 200),
    "regescrt.dat": (401, 200),
    "sdp01.dat": (407, 404),
    # 3.4 backward compatibility: RFC 2543 transaction matching
    "inv2543.dat": (407, 404),
}


def outcome(core: SipRouter, data: bytes) -> list[int]:
    """The statuses we answered with, or [RELAYED] when the message was forwarded."""
    out = sent(core.receive(data, SOURCE, 1_000_000.0))
    relayed = [m for m, _ in out if isinstance(m, Request)]
    answered = [m.status for m, _ in out if isinstance(m, Response)]
    return answered + [RELAYED] * len(relayed)


def answers(core: SipRouter, data: bytes) -> list[Response]:
    out = sent(core.receive(data, SOURCE, 1_000_000.0))
    return [m for m, _ in out if isinstance(m, Response)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("auth", [True, False], ids=["auth", "open"])
def test_torture_message_gets_its_answer(name: str, auth: bool) -> None:
    data = (corpus_dir("rfc4475") / name).read_bytes()
    expected = EXPECTED[name][0 if auth else 1]
    assert outcome(make_core(require_auth=auth), data) == ([] if expected is None else [expected])


def test_mpart01_from_a_trusted_peer_is_relayed_with_its_binary_body_unchanged() -> None:
    data = (corpus_dir("rfc4475") / "mpart01.dat").read_bytes()
    core = make_core(trusted=[TrustedPeer(f"{SOURCE.host}/32")])
    out = sent(core.receive(data, SOURCE, 1_000_000.0))
    [(forwarded, _)] = out
    assert isinstance(forwarded, Request)
    assert forwarded.body and forwarded.body in data


def test_every_corpus_file_has_an_expectation() -> None:
    assert {path.name for path in corpus_dir("rfc4475").glob("*.dat")} == set(EXPECTED)


def registered(core: SipRouter) -> list[Binding]:
    return list(core.registrar.location.all_bindings())


def test_escnull_stores_two_bindings_and_keeps_the_nul() -> None:
    core = make_core(require_auth=False)
    assert [r.status for r in answers(core, (corpus_dir("rfc4475") / "escnull.dat").read_bytes())] == [200]
    bindings = registered(core)
    assert len(bindings) == 2
    assert all("\\x00" in b.aor or "%00" in b.aor for b in bindings)


def test_cparam01_keeps_the_header_parameter_out_of_the_uri() -> None:
    core = make_core(require_auth=False)
    [response] = answers(core, (corpus_dir("rfc4475") / "cparam01.dat").read_bytes())
    [binding] = registered(core)
    assert ";unknownparam" not in binding.contact
    assert "<sip:+19725552222@gw1.example.net>" in (response.headers.get("Contact") or "")


def test_cparam02_keeps_the_uri_parameter() -> None:
    core = make_core(require_auth=False)
    answers(core, (corpus_dir("rfc4475") / "cparam02.dat").read_bytes())
    [binding] = registered(core)
    assert binding.contact.endswith(";unknownparam")


def test_regescrt_keeps_the_escaped_route_in_the_stored_contact() -> None:
    core = make_core(require_auth=False)
    [response] = answers(core, (corpus_dir("rfc4475") / "regescrt.dat").read_bytes())
    [binding] = registered(core)
    assert "?Route=" in binding.contact
    assert "Route" not in response.headers


def test_dblreq_creates_exactly_one_transaction() -> None:
    core = make_core(require_auth=False)
    answers(core, (corpus_dir("rfc4475") / "dblreq.dat").read_bytes())
    assert len(core.layer) == 1


def test_unknown_authorization_scheme_is_never_authenticated() -> None:
    core = make_core()
    [response] = answers(core, (corpus_dir("rfc4475") / "regaut01.dat").read_bytes())
    assert response.status == 401
    assert response.headers.lines("WWW-Authenticate")
    assert registered(core) == []
