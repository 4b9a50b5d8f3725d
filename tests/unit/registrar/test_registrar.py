"""REGISTER processing (RFC 3261 section 10.3), exact actions and responses."""

from __future__ import annotations

from email.utils import formatdate
from pathlib import Path

import attrs
import pytest

from scaserver.registrar.binding import (
    Binding,
    BindingAdded,
    BindingExpired,
    BindingKey,
    BindingRefreshed,
    BindingRemoved,
    KeyKind,
    RemovalReason,
)
from scaserver.registrar.location import EXPIRY_TIMER
from scaserver.registrar.registrar import (
    Registrar,
    RegistrarPolicy,
    RegistrarSettings,
    contact_line,
    response_tag,
)
from scaserver.sip.actions import CancelTimer, Deliver, EngineAction, Respond, StartTimer
from scaserver.sip.domains import DomainPolicy
from scaserver.sip.keys import ServerKey
from scaserver.sip.message import Headers, Peer, Request, Response, Transport
from scaserver.sip.parser import parse_message
from scaserver.sip.responses import make_response

AOR = "sip:alice@example.com"
PEER = Peer(Transport.UDP, "192.0.2.1", 5060)
NOW = 1_700_000_000.0
TX = ServerKey("tx-1", "phone.example.com", None, "REGISTER")
RFC4475 = Path("/work/shared/conformance/rfc4475")
POLICY = RegistrarPolicy(domains=frozenset({"example.com", "Example.NET"}))


def registrar(*, min_expires: int = 60, max_expires: int = 3600, max_contacts: int = 10) -> Registrar:
    return Registrar(
        attrs.evolve(
            POLICY,
            settings=RegistrarSettings(
                min_expires=min_expires, max_expires=max_expires, max_contacts=max_contacts
            ),
        )
    )


def register(
    *contacts: str,
    to: str = AOR,
    uri: str = "sip:example.com",
    call_id: str = "reg-1",
    cseq: int = 1,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    headers = Headers.of(
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1"),
        ("Max-Forwards", "70"),
        ("From", f"<{to}>;tag=f1"),
        ("To", f"<{to}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        *(("Contact", contact) for contact in contacts),
        *extra,
    )
    return Request("REGISTER", uri, headers)


def ok(
    request: Request, *contacts: str, now: float = NOW, extra: tuple[tuple[str, str], ...] = ()
) -> Respond:
    headers = Headers.of(*(("Contact", c) for c in contacts), *extra, ("Date", formatdate(now, usegmt=True)))
    return Respond(TX, make_response(request, 200, headers=headers, to_tag=response_tag(request)))


def refused(request: Request, status: int, reason: str, *headers: tuple[str, str]) -> list[EngineAction]:
    response = make_response(
        request, status, reason, headers=Headers.of(*headers), to_tag=response_tag(request)
    )
    return [Respond(TX, response)]


def run(reg: Registrar, request: Request, now: float = NOW, user: str | None = "alice") -> list[EngineAction]:
    return reg.on_register(request, PEER, user, now, transaction=TX)


def uri_key(contact: str, aor: str = AOR) -> BindingKey:
    return BindingKey(aor, KeyKind.URI, contact)


def stored(
    contact: str,
    *,
    expires: float = 3600,
    call_id: str = "reg-1",
    cseq: int = 1,
    now: float = NOW,
    **kw: object,
) -> Binding:
    fields: dict[str, object] = {
        "key": uri_key(contact),
        "contact": contact,
        "expires_at": now + expires,
        "call_id": call_id,
        "cseq": cseq,
        "received": PEER,
        "registered_at": now,
        "updated_at": now,
    }
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


def response_of(actions: list[EngineAction]) -> Response:
    last = actions[-1]
    assert isinstance(last, Respond) and isinstance(last.response, Response)
    return last.response


# Step 7 / 8: adding, refreshing, removing ---------------------------------------------------------


def test_first_register_adds_binding_with_default_expiry() -> None:
    reg = registrar()
    request = register("<sip:alice@192.0.2.1:5062>")
    binding = stored("sip:alice@192.0.2.1:5062")
    assert run(reg, request) == [
        StartTimer(binding.key, EXPIRY_TIMER, 3600.0),
        Deliver(BindingAdded(binding, NOW)),
        ok(request, "<sip:alice@192.0.2.1:5062>;expires=3600"),
    ]
    assert reg.lookup(AOR, NOW) == (binding,)


def test_refresh_with_higher_cseq_reports_refreshed_and_keeps_registered_at() -> None:
    reg = registrar()
    run(reg, register("<sip:alice@192.0.2.1>"))
    request = register("<sip:alice@192.0.2.1>", cseq=2, extra=(("Expires", "600"),))
    later = NOW + 100
    new = stored("sip:alice@192.0.2.1", expires=600, cseq=2, now=later, registered_at=NOW)
    assert run(reg, request, later) == [
        StartTimer(new.key, EXPIRY_TIMER, 600.0),
        Deliver(BindingRefreshed(new, stored("sip:alice@192.0.2.1"), later)),
        ok(request, "<sip:alice@192.0.2.1>;expires=600", now=later),
    ]


def test_new_call_id_with_lower_cseq_still_refreshes() -> None:
    reg = registrar()
    run(reg, register("<sip:alice@192.0.2.1>", cseq=50))
    actions = run(reg, register("<sip:alice@192.0.2.1>", call_id="reg-2", cseq=1), NOW + 1)
    assert isinstance(actions[1], Deliver) and isinstance(actions[1].event, BindingRefreshed)
    assert reg.lookup(AOR, NOW + 1)[0].call_id == "reg-2"


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_not_higher_cseq_is_500_out_of_order(cseq: int) -> None:
    reg = registrar()
    run(reg, register("<sip:alice@192.0.2.1>", cseq=1))
    request = register(
        "<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>", cseq=cseq, extra=(("Expires", "60"),)
    )
    assert run(reg, request) == refused(request, 500, "Out of Order")
    assert [b.contact for b in reg.lookup(AOR, NOW)] == ["sip:alice@192.0.2.1"]  # nothing applied


def test_contact_expires_param_wins_over_header_and_header_over_default() -> None:
    reg = registrar()
    request = register("<sip:a@192.0.2.1>;expires=120", "<sip:b@192.0.2.1>", extra=(("Expires", "300"),))
    response = response_of(run(reg, request))
    assert response.headers.lines("Contact") == (
        "<sip:a@192.0.2.1>;expires=120",
        "<sip:b@192.0.2.1>;expires=300",
    )
    assert {b.contact: b.expires_at - NOW for b in reg.lookup(AOR, NOW)} == {
        "sip:a@192.0.2.1": 120,
        "sip:b@192.0.2.1": 300,
    }


def test_expiry_over_maximum_is_clamped() -> None:
    reg = registrar(max_expires=1800)
    request = register("<sip:a@192.0.2.1>;expires=7200")
    assert response_of(run(reg, request)).headers.lines("Contact") == ("<sip:a@192.0.2.1>;expires=1800",)


@pytest.mark.parametrize(
    ("contact", "expires"), [("<sip:a@192.0.2.1>;expires=59", None), ("<sip:a@192.0.2.1>", "1")]
)
def test_expiry_under_minimum_is_423_with_min_expires(contact: str, expires: str | None) -> None:
    reg = registrar(min_expires=60)
    extra = (("Expires", expires),) if expires else ()
    request = register(contact, extra=extra)
    assert run(reg, request) == refused(request, 423, "Interval Too Brief", ("Min-Expires", "60"))
    assert reg.lookup(AOR, NOW) == ()


def test_423_applies_nothing_even_for_valid_contacts_of_the_same_request() -> None:
    reg = registrar()
    request = register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>;expires=5")
    assert response_of(run(reg, request)).status == 423
    assert len(reg.location) == 0


def test_expires_zero_removes_the_binding() -> None:
    reg = registrar()
    run(reg, register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"))
    request = register("<sip:a@192.0.2.1>;expires=0", cseq=2)
    removed = stored("sip:a@192.0.2.1")
    assert run(reg, request, NOW + 10) == [
        CancelTimer(removed.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(removed, RemovalReason.UNREGISTERED, NOW + 10)),
        ok(request, "<sip:b@192.0.2.1>;expires=3590", now=NOW + 10),
    ]


def test_expires_zero_for_unknown_contact_changes_nothing() -> None:
    reg = registrar()
    request = register("<sip:a@192.0.2.1>", extra=(("Expires", "0"),))
    assert run(reg, request) == [ok(request)]


def test_wildcard_with_expires_zero_removes_all() -> None:
    reg = registrar()
    run(reg, register("<sip:a@192.0.2.1>;q=0.9", "<sip:b@192.0.2.1>;q=0.1"))
    request = register("*", cseq=2, extra=(("Expires", "0"),))
    first = stored("sip:a@192.0.2.1", q=0.9)
    second = stored("sip:b@192.0.2.1", q=0.1)
    assert run(reg, request) == [
        CancelTimer(first.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(first, RemovalReason.UNREGISTERED, NOW)),
        CancelTimer(second.key, EXPIRY_TIMER),
        Deliver(BindingRemoved(second, RemovalReason.UNREGISTERED, NOW)),
        ok(request),
    ]


@pytest.mark.parametrize("extra", [(), (("Expires", "60"),)])
def test_wildcard_without_expires_zero_is_400(extra: tuple[tuple[str, str], ...]) -> None:
    reg = registrar()
    request = register("*", extra=extra)
    assert run(reg, request) == refused(request, 400, "Bad Request")


def test_wildcard_with_another_contact_is_400() -> None:
    reg = registrar()
    request = register("*", "<sip:a@192.0.2.1>", extra=(("Expires", "0"),))
    assert run(reg, request) == refused(request, 400, "Bad Request")


def test_wildcard_with_same_call_id_and_old_cseq_is_out_of_order() -> None:
    reg = registrar()
    run(reg, register("<sip:a@192.0.2.1>", cseq=5))
    request = register("*", cseq=5, extra=(("Expires", "0"),))
    assert run(reg, request) == refused(request, 500, "Out of Order")
    assert len(reg.location) == 1


def test_query_without_contact_lists_bindings_and_changes_nothing() -> None:
    reg = registrar()
    run(reg, register("<sip:a@192.0.2.1>;q=0.5", "<sip:b@192.0.2.1>;q=1"))
    request = register(cseq=2)
    assert run(reg, request, NOW + 30) == [
        ok(
            request,
            "<sip:b@192.0.2.1>;expires=3570;q=1",
            "<sip:a@192.0.2.1>;expires=3570;q=0.5",
            now=NOW + 30,
        )
    ]


def test_query_for_aor_without_bindings_has_no_contact() -> None:
    reg = registrar()
    request = register()
    assert run(reg, request) == [ok(request)]


def test_binding_expires_on_its_timer() -> None:
    reg = registrar()
    actions = run(reg, register("<sip:a@192.0.2.1>;expires=60"))
    timer = actions[0]
    assert isinstance(timer, StartTimer)
    binding = stored("sip:a@192.0.2.1", expires=60)
    assert reg.on_timer(binding.key, timer.name, NOW + timer.delay) == [
        Deliver(BindingExpired(binding, NOW + 60))
    ]
    assert reg.lookup(AOR, NOW + 60) == ()


def test_restore_rearms_expiry() -> None:
    reg = registrar()
    binding = stored("sip:a@192.0.2.1", expires=60)
    assert reg.restore([binding], NOW + 10) == [StartTimer(binding.key, EXPIRY_TIMER, 50.0)]
    assert reg.lookup(AOR, NOW + 10) == (binding,)


# Stored data: q, Path, User-Agent, received, instance, push --------------------------------------


def test_binding_records_q_user_agent_path_and_source() -> None:
    reg = registrar()
    request = register(
        "<sip:a@192.0.2.1>;q=0.7",
        extra=(
            ("User-Agent", "Polycom/7.1"),
            ("Path", "<sip:edge1.example.com;lr>"),
            ("Path", "<sip:edge2.example.com;lr>"),
        ),
    )
    response = response_of(run(reg, request))
    (binding,) = reg.lookup(AOR, NOW)
    assert binding.q == 0.7
    assert binding.user_agent == "Polycom/7.1"
    assert binding.path == ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")
    assert binding.received == PEER
    assert "Path" not in response.headers  # the client did not say Supported: path


def test_path_echoed_when_client_supports_path() -> None:
    reg = registrar()
    request = register(
        "<sip:a@192.0.2.1>",
        extra=(("Supported", "outbound, path"), ("Path", "<sip:edge1.example.com;lr>")),
    )
    assert run(reg, request)[-1] == ok(
        request, "<sip:a@192.0.2.1>;expires=3600", extra=(("Path", "<sip:edge1.example.com;lr>"),)
    )


def test_instance_and_reg_id_are_stored_and_echoed() -> None:
    reg = registrar()
    contact = '<sip:a@192.0.2.1;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
    response = response_of(run(reg, register(contact)))
    (binding,) = reg.lookup(AOR, NOW)
    assert binding.instance == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert binding.reg_id == 1
    assert binding.key == BindingKey(
        AOR, KeyKind.INSTANCE, "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>;reg-id=1"
    )
    assert response.headers.lines("Contact") == (
        '<sip:a@192.0.2.1;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1;expires=3600',
    )


def test_same_instance_from_a_new_address_replaces_the_binding() -> None:
    reg = registrar()
    instance = '+sip.instance="<urn:uuid:1>"'
    run(reg, register(f"<sip:a@192.0.2.1:5060>;{instance}"))
    actions = run(reg, register(f"<sip:a@198.51.100.9:40000>;{instance}", call_id="new", cseq=1), NOW + 5)
    assert isinstance(actions[1], Deliver) and isinstance(actions[1].event, BindingRefreshed)
    assert [b.contact for b in reg.lookup(AOR, NOW + 5)] == ["sip:a@198.51.100.9:40000"]


def test_push_parameters_are_stored_and_key_the_binding() -> None:
    reg = registrar()
    push = "pn-provider=apns;pn-prid=00fc1370;pn-param=ABCD.com.example.voip"
    run(reg, register(f"<sip:a@192.0.2.1:5060;{push}>"))
    run(reg, register(f"<sip:a@203.0.113.5:6000;{push}>", call_id="other"), NOW + 1)
    (binding,) = reg.lookup(AOR, NOW + 1)
    assert binding.push == (
        ("pn-provider", "apns"),
        ("pn-prid", "00fc1370"),
        ("pn-param", "ABCD.com.example.voip"),
    )
    assert binding.key == BindingKey(AOR, KeyKind.PUSH, "apns 00fc1370 ABCD.com.example.voip")
    assert binding.contact.startswith("sip:a@203.0.113.5:6000")


def test_contact_uri_matched_per_rfc3261_19_1_4() -> None:
    reg = registrar()
    run(reg, register("<sip:a@HOST.example.com;transport=tcp>"))
    actions = run(reg, register("<sip:a@host.example.com;transport=TCP;foo=bar>", cseq=2))
    assert isinstance(actions[1], Deliver) and isinstance(actions[1].event, BindingRefreshed)
    assert len(reg.location) == 1
    run(reg, register("<sip:a@host.example.com>", cseq=3))  # no transport: a different URI
    assert len(reg.location) == 2


def test_duplicate_contact_in_one_request_last_one_wins() -> None:
    reg = registrar()
    request = register("<sip:a@192.0.2.1>;expires=100", "<sip:a@192.0.2.1>;expires=200")
    assert response_of(run(reg, request)).headers.lines("Contact") == ("<sip:a@192.0.2.1>;expires=200",)


def test_contact_line_formats_q() -> None:
    binding = stored("sip:a@h", q=0.25, params=(("methods", '"INVITE"'), ("ob", None)))
    assert contact_line(binding, NOW) == '<sip:a@h>;methods="INVITE";ob;expires=3600;q=0.25'
    assert contact_line(attrs.evolve(binding, q=0.0), NOW).endswith(";q=0")


# Contact limit -------------------------------------------------------------------------------------


def test_contact_limit_is_503_too_many_registered_contacts() -> None:
    reg = registrar(max_contacts=2)
    run(reg, register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"))
    request = register("<sip:c@192.0.2.1>", call_id="other")
    assert run(reg, request) == refused(request, 503, "Too Many Registered Contacts")
    # Refreshing at the limit, and replacing one contact by another, are fine.
    assert response_of(run(reg, register("<sip:a@192.0.2.1>", cseq=2))).status == 200
    swap = register("<sip:a@192.0.2.1>;expires=0", "<sip:c@192.0.2.1>", cseq=3)
    assert response_of(run(reg, swap)).status == 200
    assert sorted(b.contact for b in reg.lookup(AOR, NOW)) == ["sip:b@192.0.2.1", "sip:c@192.0.2.1"]


def test_contact_limit_zero_means_unlimited() -> None:
    reg = registrar(max_contacts=0)
    request = register(*(f"<sip:u{i}@192.0.2.1>" for i in range(30)))
    assert response_of(run(reg, request)).status == 200
    assert len(reg.location) == 30


# Steps 1 to 5: refusals ------------------------------------------------------------------------


def test_request_uri_not_sip_is_416() -> None:
    request = register("<sip:a@192.0.2.1>", uri="tel:+15551234")
    assert run(registrar(), request) == refused(request, 416, "Unsupported URI Scheme")


def test_request_uri_of_foreign_domain_is_404() -> None:
    request = register("<sip:a@192.0.2.1>", uri="sip:elsewhere.example")
    assert run(registrar(), request) == refused(request, 404, "Not Found")


def test_to_of_foreign_domain_is_404() -> None:
    request = register("<sip:a@192.0.2.1>", to="sip:alice@elsewhere.example")
    assert run(registrar(), request, user=None) == refused(request, 404, "Not Found")


def test_domains_compare_case_insensitively() -> None:
    request = register("<sip:a@192.0.2.1>", uri="sip:EXAMPLE.net", to="sip:alice@example.NET")
    assert response_of(run(registrar(), request)).status == 200


def test_unknown_aor_is_404_when_existence_is_checked() -> None:
    reg = registrar()
    reg.aor_exists = {"sip:bob@example.com"}.__contains__
    request = register("<sip:a@192.0.2.1>")
    assert run(reg, request) == refused(request, 404, "Not Found")


def test_empty_domain_set_refuses_every_domain_and_says_why() -> None:
    reg = Registrar(RegistrarPolicy(domains=frozenset()))
    request = register("<sip:a@192.0.2.1>", uri="sip:10.0.0.1", to="sip:alice@10.0.0.1")
    response = response_of(run(reg, request))
    assert response.status == 404
    assert response.detail is not None and "'10.0.0.1' is not ours" in response.detail


def test_directory_domain_is_a_registrar_domain_when_none_is_configured() -> None:
    policy = DomainPolicy(directory=frozenset({"example.test"}), addresses=frozenset({"192.0.2.1"}))
    reg = Registrar(RegistrarPolicy(domains=policy))
    request = register("<sip:a@192.0.2.1>", uri="sip:example.test", to="sip:alice@example.test")
    assert response_of(run(reg, request)).status == 200


def test_reloaded_domains_serve_the_next_register_and_keep_the_settings() -> None:
    reg = registrar(min_expires=120)
    request = register("<sip:a@192.0.2.1>", uri="sip:example.test", to="sip:alice@example.test")
    assert response_of(run(reg, request)).status == 404
    reg.use_domains(DomainPolicy(directory=frozenset({"example.test"})))
    assert response_of(run(reg, request)).status == 200
    assert reg.policy.settings.min_expires == 120


def test_unsupported_require_is_420_with_unsupported() -> None:
    request = register("<sip:a@192.0.2.1>", extra=(("Require", "path, foo"),))
    assert run(registrar(), request) == refused(request, 420, "Bad Extension", ("Unsupported", "foo"))


def test_registering_another_users_aor_is_403() -> None:
    request = register("<sip:a@192.0.2.1>")
    assert run(registrar(), request, user="mallory") == refused(request, 403, "Forbidden")


def test_trusted_peer_without_user_may_register_any_local_aor() -> None:
    assert response_of(run(registrar(), register("<sip:a@192.0.2.1>"), user=None)).status == 200


def test_non_sip_contact_is_400() -> None:
    request = register("<tel:+15551234>")
    assert run(registrar(), request) == refused(request, 400, "Bad Request")


def test_bad_expires_header_is_400() -> None:
    request = register("<sip:a@192.0.2.1>", extra=(("Expires", "soon"),))
    assert run(registrar(), request) == refused(request, 400, "Bad Request")


# RFC 4475 torture messages ---------------------------------------------------------------------


def torture(name: str) -> Request:
    message = parse_message((RFC4475 / f"{name}.dat").read_bytes())
    assert isinstance(message, Request)
    return message


def test_rfc4475_unksm2_non_sip_aor_is_400_and_nothing_stored() -> None:
    reg = registrar()
    request = torture("unksm2")
    assert run(reg, request, user=None) == refused(request, 400, "Bad Request")
    assert len(reg.location) == 0


def test_rfc4475_regbadct_unbracketed_escaped_header_is_400() -> None:
    reg = registrar()
    request = torture("regbadct")
    assert response_of(run(reg, request, user=None)).status == 400
    assert len(reg.location) == 0


def test_rfc4475_cparam01_header_param_stays_outside_the_uri() -> None:
    reg = registrar()
    response = response_of(run(reg, torture("cparam01"), user=None))
    assert response.status == 200
    assert response.headers.lines("Contact") == (
        "<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600",
    )
    query = register(to="sip:watson@example.com", call_id="q", cseq=1)
    (line,) = response_of(run(reg, query, NOW + 1, user=None)).headers.lines("Contact")
    assert line.startswith("<sip:+19725552222@gw1.example.net>")


def test_rfc4475_cparam02_uri_param_kept_inside_the_uri() -> None:
    reg = registrar()
    response = response_of(run(reg, torture("cparam02"), user=None))
    assert response.headers.lines("Contact") == (
        "<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600",
    )
    (binding,) = reg.lookup("sip:watson@example.com", NOW)
    assert binding.contact == "sip:+19725552222@gw1.example.net;unknownparam"


def test_rfc4475_regescrt_escaped_route_header_kept_in_stored_uri() -> None:
    reg = registrar()
    response = response_of(run(reg, torture("regescrt"), user=None))
    assert response.status == 200
    (binding,) = reg.lookup("sip:user@example.com", NOW)
    assert binding.contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert "Route" not in response.headers


def test_rfc4475_escnull_nul_in_user_is_not_cut_and_two_bindings_stored() -> None:
    reg = registrar()
    request = torture("escnull")
    response = response_of(run(reg, request, user=None))
    assert response.status == 200
    bindings = reg.lookup("sip:null-%00-null@example.com", NOW)
    assert sorted(b.contact for b in bindings) == [
        "sip:%00%00@host5.example.com",
        "sip:%00@host5.example.com",
    ]
    assert reg.location.aors() == ("sip:null-%00-null@example.com",)


def test_rfc4475_escnull_authenticated_user_with_nul_matches() -> None:
    response = response_of(run(registrar(), torture("escnull"), user="null-\x00-null"))
    assert response.status == 200
    assert response_of(run(registrar(), torture("escnull"), user="null-")).status == 403


def test_response_tag_is_stable_per_request() -> None:
    first, second = register("<sip:a@h>"), register("<sip:a@h>", cseq=2)
    assert response_tag(first) == response_tag(first)
    assert response_tag(first) != response_tag(second)
