"""The full-state Call-Info of a line (sca.md 5.1): rendered once per state, never stale."""

from __future__ import annotations

import attrs

from scaserver.sca.settings import ScaSettings

from .scenario import LINE, engine

OTHER = "sip:2002@pbx.example.com"
IDLE = "<sip:pbx.example.com>;appearance-index=*;appearance-state=idle"


def test_the_full_state_follows_every_change_of_the_line() -> None:
    sca = engine()
    assert sca.full_state(LINE) == IDLE
    sca.seize_appearance(LINE, "aor:a", 1.0)
    seized = "<sip:pbx.example.com>;appearance-index=1;appearance-state=seized," + IDLE
    assert sca.full_state(LINE) == seized
    assert sca.full_state(LINE) is sca.full_state(LINE)  # rendered once for an unchanged line
    sca.update_appearance(LINE, 1, "active", 2.0, uri="sip:3001@carrier.example.net")
    active = (
        '<sip:pbx.example.com>;appearance-index=1;appearance-state=active;'
        'appearance-uri="sip:3001@carrier.example.net",' + IDLE
    )
    assert sca.full_state(LINE) == active
    sca.update_appearance(LINE, 1, "active", 3.0, uri="sip:3002@carrier.example.net")
    assert sca.full_state(LINE) == active.replace("3001", "3002")
    assert sca.full_state(OTHER) == IDLE
    assert sca.full_state(LINE) == active.replace("3001", "3002")
    sca.release_appearance(LINE, 1, 4.0)
    assert sca.full_state(LINE) == IDLE


def test_the_full_state_follows_the_info_uri_setting() -> None:
    sca = engine()
    assert sca.full_state(LINE) == IDLE
    sca.settings = attrs.evolve(ScaSettings(), call_info_uri="aor")
    assert sca.full_state(LINE) == f"<{LINE}>;appearance-index=*;appearance-state=idle"
