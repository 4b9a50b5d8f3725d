"""What the control plane and the metrics read of the parking lot, the push devices and the
mid-registrar of a running core (rpc.md 3.4, 3.5, push-and-parking.md 9), and the pushes
``pushreg.wake`` plans; the edge (``edge.controlplane.MobileParkingAdmin``) runs the actions and
waits for the answers."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import attrs

from scaserver.control.seams import (
    UAC_FLAG_AUTHSENT,
    UAC_FLAG_INIT,
    UAC_FLAG_ONGOING,
    UAC_FLAG_ONLINE,
    ParkedCallInfo,
    ParkedTransaction,
    UacRegistration,
    UpstreamInfo,
    WakeOutcome,
)
from scaserver.control.views import canonical_argument, parked_call_info, usrloc_aor
from scaserver.push.facts import PushAnswered, PushRequested
from scaserver.push.pnparams import strip_pn_params
from scaserver.registrar.midregengine import MidRegistrar
from scaserver.registrar.midregstate import UpstreamRegistration
from scaserver.registrar.upstream import UpstreamState
from scaserver.router.router import SipRouter
from scaserver.sip.actions import Deliver, EngineAction
from scaserver.sip.message import Peer
from scaserver.sip.uri import SipUri, format_host, parse_uri


@attrs.frozen
class WakeRow:
    """One contact ``pushreg.wake`` reports: its push provider and the push attempt sent for
    its device (None: suppressed by the push policy)."""

    contact: str
    provider: str
    attempt: str | None


@attrs.frozen
class WakePlan:
    """The pushes one ``pushreg.wake`` sends (``actions``) and the contacts it reports."""

    actions: tuple[EngineAction, ...]
    rows: tuple[WakeRow, ...]

    @property
    def attempts(self) -> set[str]:
        """The push attempts whose answers the call waits for."""
        return {row.attempt for row in self.rows if row.attempt is not None}

    def outcomes(self, answers: Mapping[str, PushAnswered], now: float) -> list[WakeOutcome]:
        """Each contact's outcome, given the answers that came in (others are pending)."""
        outcomes: list[WakeOutcome] = []
        for row in self.rows:
            if row.attempt is None:
                outcomes.append(WakeOutcome(row.contact, row.provider, "suppressed"))
                continue
            answer = answers.get(row.attempt)
            if answer is None:
                outcomes.append(WakeOutcome(row.contact, row.provider, "pending"))
                continue
            latency = max(0, int((answer.at - now) * 1000 + 0.5))
            outcomes.append(
                WakeOutcome(row.contact, row.provider, answer.outcome.value, answer.status, latency)
            )
        return outcomes


def _peer_uri(peer: Peer) -> str:
    return f"sip:{format_host(peer.host)}:{peer.port};transport={peer.transport.value.lower()}"


class MobileParkingControl:
    """The reads of ``control.seams.ParkingControl`` over the parking lot and mid-registrar of a
    running core (rpc.md 3.4, 3.5).  ``Tlabel`` is the parked call's number, ``Tindex`` a CRC
    of its Call-ID: opaque integers, stable while the call is parked."""

    def __init__(self, core: SipRouter, *, default_domain: str) -> None:
        self._core = core
        self._domain = default_domain.lower()

    def parked(self) -> Sequence[ParkedTransaction]:
        parking = self._core.parking
        if parking is None:
            return ()
        found: list[ParkedTransaction] = []
        for call in parking.lot.calls():
            label = int(call.park_id.rpartition("-")[2] or 0)
            index = zlib.crc32(call.spec.call_id.encode("utf-8")) & 0xFFFF
            for aor in call.spec.aors:
                found.append(ParkedTransaction(usrloc_aor(aor), index, label, call.spec.call_id))
        return sorted(found, key=lambda item: (item.ruri, item.tlabel))

    def parked_calls(self, ruri: str | None = None) -> Sequence[ParkedCallInfo]:
        parking = self._core.parking
        if parking is None:
            return ()
        if ruri is None:
            calls = parking.lot.calls()
        else:
            aor = canonical_argument(ruri, self._domain)
            calls = () if aor is None else parking.lot.calls(aor)
        settings = parking.lot.settings
        return [parked_call_info(call, settings) for call in sorted(calls, key=lambda c: c.park_id)]

    def registrations(self) -> Sequence[UpstreamInfo]:
        push = self._core.push
        if push is None or push.midregistrar is None:
            return ()
        regs = sorted(push.midregistrar.registrations(), key=lambda reg: reg.aor)
        return [self._info(reg) for reg in regs]

    def registration(self, aor: str) -> UpstreamInfo | None:
        push = self._core.push
        canonical = canonical_argument(aor, self._domain)
        if push is None or push.midregistrar is None or canonical is None:
            return None
        reg = push.midregistrar.registration(canonical)
        return None if reg is None else self._info(reg)

    def _info(self, reg: UpstreamRegistration) -> UpstreamInfo:
        push = self._core.push
        assert push is not None and push.midregistrar is not None
        last_ok = None if reg.renewed_at == float("-inf") else reg.renewed_at
        return UpstreamInfo(
            aor=reg.aor,
            mode=push.midregistrar.settings.table.mode.value,
            state=reg.state.value,
            expires_at=reg.expires_at,
            last_ok=last_ok,
            last_error=reg.last_error,
            upstream_auth_needed=reg.upstream_auth_needed,
        )

    def _wake_plan(self, aor: str, reason: str, now: float) -> WakePlan | None:
        """The pushes that wake the AoR's push-capable devices (one per device token), or None
        when the AoR has no bindings."""
        push = self._core.push
        canonical = canonical_argument(aor, self._domain)
        if push is None or canonical is None:
            return None
        bindings = push.bindings_of(canonical)
        if not bindings:
            return None
        actions: list[EngineAction] = []
        rows: list[WakeRow] = []
        attempts: dict[tuple[str, str], str | None] = {}
        for binding in bindings:
            device = push.device(binding.key)
            if device is None or not device.push_capable:
                continue
            if device.token not in attempts:
                pushed = push.refresh_push(device, reason, now)
                actions += pushed
                sent = [
                    action.event.request.id
                    for action in pushed
                    if isinstance(action, Deliver) and isinstance(action.event, PushRequested)
                ]
                attempts[device.token] = sent[0] if sent else None
            contact = strip_pn_params(binding.contact)
            rows.append(WakeRow(contact, device.coordinates.provider, attempts[device.token]))
        return WakePlan(tuple(actions), tuple(rows))

    def uac_registrations(self) -> Sequence[UacRegistration]:
        push = self._core.push
        if push is None or push.midregistrar is None:
            return ()
        midreg = push.midregistrar
        records = (self._uac(reg, midreg) for reg in midreg.registrations())
        return sorted(records, key=lambda record: record.l_uuid)

    def _uac(self, reg: UpstreamRegistration, midreg: MidRegistrar) -> UacRegistration:
        """Kamailio ``uac`` terms for one upstream registration (rpc.md 3.5); ``realm`` and
        ``auth_username`` are those of the last challenge we answered (empty before one)."""
        uri = parse_uri(reg.aor)
        user, domain = "", ""
        if isinstance(uri, SipUri):
            user = uri.user or ""
            domain = format_host(uri.host) + (f":{uri.port}" if uri.port else "")
        settings = midreg.settings
        flags = 0
        if reg.inflight is not None:
            flags |= UAC_FLAG_ONGOING
            sent = reg.inflight.sent
            if sent is not None and "Authorization" in sent.headers:
                flags |= UAC_FLAG_AUTHSENT
        if reg.state is UpstreamState.REGISTERED:
            flags |= UAC_FLAG_ONLINE
        if reg.cseq > 0 or reg.state is not UpstreamState.IDLE or reg.renewed_at != float("-inf"):
            flags |= UAC_FLAG_INIT
        transport, host, port = self._core.layer.local_via(settings.upstream)
        return UacRegistration(
            l_uuid=usrloc_aor(reg.aor),
            l_username=user,
            l_domain=domain,
            r_username=user,
            r_domain=domain,
            realm=reg.auth_realm,
            auth_username=reg.auth_username,
            auth_proxy=_peer_uri(settings.upstream),
            expires=max(settings.table.outgoing_expires, reg.floor),
            flags=flags,
            timer_expires=reg.expires_at,
            reg_init=0.0 if reg.renewed_at == float("-inf") else reg.renewed_at,
            reg_delay=0,
            contact_addr=midreg.aggregate_contact(reg.aor).strip("<>"),
            socket=f"{transport.lower()}:{format_host(host)}:{port}",
        )


class EngineParkingGauges:
    """``metrics.collectors.ParkingGauges`` over the parking lot: the tsilo table counted at scrape time."""

    def __init__(self, core: SipRouter) -> None:
        self._core = core

    def _stored(self) -> list[tuple[str, ...]]:
        parking = self._core.parking
        return [] if parking is None else [call.spec.aors for call in parking.lot.calls()]

    def stored_ruris(self) -> int:
        return len({aor for aors in self._stored() for aor in aors})

    def stored_transactions(self) -> int:
        return sum(len(aors) for aors in self._stored())

    def transactions_of(self, ruri: str) -> int:
        parking = self._core.parking
        return 0 if parking is None else len(parking.lot.calls(ruri))
