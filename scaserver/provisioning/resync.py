"""The ``check-sync`` NOTIFY of ``prov.resync`` (provisioning.md section 4.5).

A pure builder: the request goes to one registered contact of the device's line, outside
any dialog (an unsolicited NOTIFY, as Polycom and Cisco phones accept it), and the
transaction layer adds the top Via.  ``Subscription-State: terminated`` makes it a
complete RFC 6665 NOTIFY (section 8.2.1: NOTIFY carries Subscription-State) that creates
no subscription.  ``reboot`` adds the ``reboot=true|false`` Event parameter Cisco and
Yealink firmware read; Polycom decides by ``voIpProt.SIP.specialEvent.checkSync.alwaysReboot``.
"""

from __future__ import annotations

from scaserver.sip.message import Headers, Request

MAX_FORWARDS = "70"


def check_sync_request(
    contact: str,
    aor: str,
    *,
    local_uri: str,
    call_id: str,
    from_tag: str,
    cseq: int = 1,
    reboot: bool | None = None,
) -> Request:
    """NOTIFY ``contact`` with ``Event: check-sync``; To is the line ``aor``, From our
    ``local_uri`` with ``from_tag``; also our Contact (RFC 6665 section 8.2.1 needs none
    outside a dialog, phones answer either way)."""
    event = "check-sync" if reboot is None else f"check-sync;reboot={'true' if reboot else 'false'}"
    return Request(
        "NOTIFY",
        contact,
        Headers.of(
            ("Max-Forwards", MAX_FORWARDS),
            ("To", f"<{aor}>"),
            ("From", f"<{local_uri}>;tag={from_tag}"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Contact", f"<{local_uri}>"),
            ("Event", event),
            ("Subscription-State", "terminated"),
            ("Content-Length", "0"),
        ),
    )
