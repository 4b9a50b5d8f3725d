"""``[push]`` (push-and-parking.md sections 4 and 5), structured straight from the
configuration file: the gateway client (:class:`scaserver.push.gateway.RetryPolicy`) reads it
whole; device typing gets the legacy rules compiled by the composition root."""

from __future__ import annotations

import attrs


@attrs.frozen
class LegacyPushRule:
    """``[[push.legacy_rules]]`` (push-and-parking.md 4.2): apps that announce push in vendor
    ways.  ``user_agent`` is a Python regular expression searched in User-Agent;
    ``token_from`` / ``param_from`` are ``contact_param:NAME`` or ``header:NAME``;
    ``keepalive`` is ``wake`` or ``extend`` ("" = the provider's default, 4.5)."""

    name: str
    user_agent: str
    provider: str
    token_from: str
    param_from: str = ""
    param: str = ""
    device_type: str = ""
    keepalive: str = ""


@attrs.frozen
class PushSettings:
    """``[push]`` (push-and-parking.md sections 4 and 5): device typing and the push gateway.

    ``enabled`` false: no push is ever sent and no call is parked.  ``gateway_url`` is the
    operator's push gateway (section 5.1); ``gateway_token`` a bearer token and
    ``gateway_secret`` the HMAC key of ``X-Scaserver-Signature`` ("" = none).  ``providers``
    are the ``pn-provider`` values we push for (others get 555); ``pnsreg_interval`` seconds
    for ``+sip.pnsreg`` in our 2xx (0 = not sent).  Timing and limits are section 5.3.
    ``refresh_trigger`` and ``extend_max_age`` (seconds) keep push bindings alive (4.5);
    ``purr`` issues PURRs and holds mid-dialog requests carrying them while the device is
    woken (6.10, off by default).
    """

    enabled: bool = False
    gateway_url: str = ""
    gateway_token: str = ""
    gateway_secret: str = ""
    providers: tuple[str, ...] = ("apns", "fcm", "webpush")
    pnsreg_interval: int = 0
    connect_timeout: float = 1.0
    request_timeout: float = 2.0
    max_attempts: int = 3
    max_inflight: int = 64
    max_queue: int = 1000
    refresh_trigger: float = 120.0
    extend_max_age: float = 7 * 24 * 3600.0
    purr: bool = False
    legacy_rules: tuple[LegacyPushRule, ...] = ()
