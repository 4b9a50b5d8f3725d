"""Device typing (push-and-parking.md 4.1, 4.2)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from scaserver.push.pnparams import (
    Classification,
    Keepalive,
    LegacyRule,
    PushCoordinates,
    Source,
    TypingSettings,
    ValueSource,
    Verdict,
    classify,
    classify_all,
    feature_caps_pns,
    masked_pn_params,
    purr_of,
    rejection,
    reply_feature_caps,
    strip_pn_params,
    token_hash,
    upstream_feature_caps,
)
from scaserver.sip.message import Headers, Request
from scaserver.sip.uri import parse_name_addr

SETTINGS = TypingSettings(providers=frozenset({"apns", "fcm"}))
FULL = "<sip:200@10.0.0.5:5062;pn-provider=apns;pn-prid=TOK1;pn-param=T.app.voip>"


def request(*headers: tuple[str, str]) -> Request:
    return Request("REGISTER", "sip:example.com", Headers.of(*headers), b"")


def verdict(contact: str, *headers: tuple[str, str], settings: TypingSettings = SETTINGS) -> Classification:
    return classify(request(*headers), parse_name_addr(contact), settings)


def test_complete_rfc8599_contact_is_push_capable() -> None:
    result = verdict(FULL)
    assert result == Classification(
        Verdict.PUSH,
        PushCoordinates("apns", "TOK1", "T.app.voip", keepalive=Keepalive.EXTEND),
        ("apns",),
    )
    assert result.push_capable
    assert result.coordinates is not None and result.coordinates.key_value() == "apns TOK1 T.app.voip"


def test_fcm_defaults_to_wake_and_pnsreg_tag_is_seen() -> None:
    result = verdict("<sip:a@h;pn-provider=fcm;pn-prid=X>;+sip.pnsreg")
    assert result.coordinates == PushCoordinates("fcm", "X", "", keepalive=Keepalive.WAKE, pnsreg=True)


def test_capability_queries() -> None:
    assert verdict("<sip:a@h;pn-provider>") == Classification(Verdict.QUERY, providers=("apns", "fcm"))
    assert verdict("<sip:a@h;pn-provider=fcm>") == Classification(Verdict.QUERY, providers=("fcm",))


def test_unsupported_provider_rejected_555_unless_pushed_elsewhere() -> None:
    assert verdict("<sip:a@h;pn-provider=acme;pn-prid=X>") == Classification(
        Verdict.REJECT, providers=("acme",)
    )
    elsewhere = verdict("<sip:a@h;pn-provider=acme;pn-prid=X>", ("Feature-Caps", '+sip.pns="acme"'))
    assert elsewhere.verdict is Verdict.PUSHED_ELSEWHERE and not elsewhere.push_capable
    assert (
        verdict("<sip:a@h;pn-provider=acme>", ("Feature-Caps", '*;+sip.pns="acme"')).verdict
        is Verdict.NOT_PUSH
    )


def test_t7_request_with_feature_caps_is_not_pushed_by_us() -> None:
    result = verdict(FULL, ("Feature-Caps", '*;+sip.pns="apns"'))
    assert result.verdict is Verdict.PUSHED_ELSEWHERE
    assert reply_feature_caps([result], SETTINGS) == ()


def test_feature_caps_parsing_tolerates_forms_and_garbage() -> None:
    req = request(("Feature-Caps", '*;+sip.pns="apns"'), ("Feature-Caps", '+sip.pns="FCM";+sip.vapid'))
    assert feature_caps_pns(req) == frozenset({"apns", "fcm"})
    assert feature_caps_pns(request(("Feature-Caps", '*;"bad'))) == frozenset()


def test_non_sip_contact_and_plain_contact() -> None:
    assert verdict("<tel:+123>").verdict is Verdict.NOT_PUSH
    assert verdict("<sip:a@h>").verdict is Verdict.NOT_PUSH


RULE = LegacyRule(
    name="acme-ios",
    user_agent=re.compile(r"^AcmePhone iOS/"),
    provider="apns",
    token_from=ValueSource.parse("contact_param:pn-tok"),
    param_from=ValueSource.parse("contact_param:app-id"),
    param="ABCDE.com.acme.voip",
    device_type="ios",
)
HEADER_RULE = LegacyRule(
    name="hdr",
    user_agent=re.compile("Droid"),
    provider="fcm",
    token_from=ValueSource.parse("header:X-Push-Token"),
    keepalive=Keepalive.EXTEND,
)
LEGACY = TypingSettings(providers=frozenset({"apns"}), legacy_rules=(RULE, HEADER_RULE))


def test_legacy_rule_matches_user_agent_and_token() -> None:
    result = verdict(
        "<sip:a@h;pn-tok=T9;app-id=my.app>", ("User-Agent", "AcmePhone iOS/3.1"), settings=LEGACY
    )
    assert result.coordinates == PushCoordinates(
        "apns", "T9", "my.app", Source.LEGACY, "ios", Keepalive.EXTEND
    )
    assert result.coordinates.key_value() == "apns T9"
    assert reply_feature_caps([result], LEGACY) == ()  # no Feature-Caps for legacy bindings


def test_legacy_rule_param_default_header_token_and_misses() -> None:
    no_param = verdict("<sip:a@h;pn-tok=T9>", ("User-Agent", "AcmePhone iOS/3"), settings=LEGACY)
    assert no_param.coordinates is not None and no_param.coordinates.param == "ABCDE.com.acme.voip"
    header = verdict("<sip:a@h>", ("User-Agent", "Droid 2"), ("X-Push-Token", " TT "), settings=LEGACY)
    assert header.coordinates is not None and header.coordinates.prid == "TT"
    assert header.coordinates.keepalive is Keepalive.EXTEND
    assert (
        verdict("<sip:a@h>", ("User-Agent", "AcmePhone iOS/3"), settings=LEGACY).verdict is Verdict.NOT_PUSH
    )
    assert verdict("<sip:a@h;pn-tok=T>", ("User-Agent", "Other"), settings=LEGACY).verdict is Verdict.NOT_PUSH
    assert verdict("<sip:a@h;pn-tok=T>", settings=LEGACY).verdict is Verdict.NOT_PUSH
    assert verdict("<sip:a@h>", ("User-Agent", "Droid"), ("X-Push-Token", " "), settings=LEGACY).verdict is (
        Verdict.NOT_PUSH
    )


@pytest.mark.parametrize("text", ["pn-tok", "cookie:x", "contact_param:", "header: "])
def test_value_source_rejects_bad_config(text: str) -> None:
    with pytest.raises(ValueError, match="value source"):
        ValueSource.parse(text)


def test_reply_and_upstream_feature_caps() -> None:
    settings = TypingSettings(providers=frozenset({"apns", "fcm"}), pnsreg_interval=300, purr=True)
    items: Sequence[Classification] = classify_all(
        request(),
        [parse_name_addr(FULL), parse_name_addr(FULL), parse_name_addr("<sip:a@h;pn-provider>")],
        settings,
    )
    assert reply_feature_caps(items, settings, purr="P1") == (
        '*;+sip.pns="apns";+sip.pnsreg="300";+sip.pnspurr="P1"',
        '*;+sip.pns="fcm"',
    )
    assert upstream_feature_caps(items) == ('*;+sip.pns="apns"',)
    assert rejection(items) is None
    assert rejection([verdict("<sip:a@h;pn-provider=zz;pn-prid=1>")]) == "zz"


def test_strip_pn_params_and_purr() -> None:
    assert strip_pn_params("sip:a@h;pn-provider=apns;pn-prid=T;transport=tcp") == "sip:a@h;transport=tcp"
    assert strip_pn_params("sip:a@h;transport=tcp") == "sip:a@h;transport=tcp"
    assert strip_pn_params("tel:+123") == "tel:+123"
    assert purr_of("sip:a@h;pn-purr=ABC") == "ABC"
    assert purr_of("sip:a@h") is None
    assert purr_of("not a uri") is None


def test_token_never_in_repr() -> None:
    coordinates = PushCoordinates("apns", "SECRET-TOKEN")
    assert "SECRET-TOKEN" not in repr(coordinates)
    assert token_hash("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "<sip:a@192.0.2.1:5060;pn-provider=apns;pn-param=ABCD.com.example.voip;pn-prid=00fc13adff78>;expires=600",
            "<sip:a@192.0.2.1:5060;pn-provider=apns;pn-param=ABCD.com.example.voip;"
            f"pn-prid=[sha256:{token_hash('00fc13adff78')[:12]}]>;expires=600",
        ),
        ("sip:a@192.0.2.1;PN-PRID=tok;pn-purr=purr1", None),
        ("sip:a@192.0.2.1?pn-prid=tok&x=1", None),
        ("sip:a@192.0.2.1;legacy=1;pn-tok=tok", None),
        ("sip:a@192.0.2.1;transport=udp", "sip:a@192.0.2.1;transport=udp"),
        ("sip:a@192.0.2.1;pn-provider=fcm", "sip:a@192.0.2.1;pn-provider=fcm"),
    ],
)
def test_masked_pn_params(text: str, masked: str | None) -> None:
    shown = masked_pn_params(text)
    if masked is not None:
        assert shown == masked
    for token in ("00fc13adff78", "=tok", "purr1"):
        assert token not in shown


def test_token_hash_of_octets_that_are_not_utf8() -> None:
    assert len(token_hash(b"tok\xff".decode("utf-8", "surrogateescape"))) == 64
