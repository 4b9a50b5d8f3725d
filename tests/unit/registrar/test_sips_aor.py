"""``sip:`` and ``sips:`` name one address-of-record (RFC 5630 sections 3.1.3 and 4, RFC 3261
10.3): each binding keeps its own contact scheme and transport."""

from __future__ import annotations

from scaserver.registrar.registrar import Registrar
from scaserver.sip.actions import Respond
from scaserver.sip.message import Response

from .test_registrar import NOW, PEER, POLICY, TX, register

SIP_AOR = "sip:alice@example.com"


def test_a_sips_and_a_sip_registration_are_bindings_of_one_aor() -> None:
    reg = Registrar(POLICY)
    reg.on_register(register("<sip:alice@192.0.2.1>", call_id="a"), PEER, "alice", NOW, transaction=TX)
    secure = register(
        "<sips:alice@192.0.2.1:5061>", to="sips:alice@example.com", uri="sips:example.com", call_id="b"
    )
    actions = reg.on_register(secure, PEER, "alice", NOW, transaction=TX)
    response = next(action.response for action in actions if isinstance(action, Respond))
    assert isinstance(response, Response) and response.status == 200
    # The 200 lists every binding of the one AoR, each with its own scheme.
    assert sorted(response.headers.values("Contact")) == [
        "<sip:alice@192.0.2.1>;expires=3600",
        "<sips:alice@192.0.2.1:5061>;expires=3600",
    ]
    assert reg.location.aors() == (SIP_AOR,)
    assert sorted(binding.contact for binding in reg.lookup(SIP_AOR, NOW)) == [
        "sip:alice@192.0.2.1",
        "sips:alice@192.0.2.1:5061",
    ]


def test_a_sips_unregistration_removes_the_bindings_of_the_sip_aor() -> None:
    reg = Registrar(POLICY)
    reg.on_register(register("<sip:alice@192.0.2.1>", call_id="a"), PEER, "alice", NOW, transaction=TX)
    wildcard = register("*", to="sips:alice@example.com", call_id="a", cseq=2, extra=(("Expires", "0"),))
    reg.on_register(wildcard, PEER, "alice", NOW, transaction=TX)
    assert reg.lookup(SIP_AOR, NOW) == ()
