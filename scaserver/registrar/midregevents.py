"""What the push mid-registrar (push-and-parking.md section 3) returns besides sends and
timers, each as ``Deliver(...)``.

Instructions the dispatcher carries out and never publishes:

* :class:`PutBinding` -> ``LocationService.put(binding, now)``;
* :class:`DropBinding` -> ``LocationService.remove(key, reason, now)``;
* :class:`RegisterForwarded` / :class:`RegisterFinished` (forwards in flight, for parking's
  6.3 case 3 and R12); :class:`UpstreamGaveUp`.

Facts it publishes: :class:`BindingConfirmed` (``binding.confirmed``, parking's only input
from registration), :class:`RegisterDecided` (every forward/absorb decision with its rule),
:class:`UpstreamChanged`, :class:`UpstreamAuthNeeded` (3.5: once per AoR when a challenge to
our own REGISTER cannot be answered; the edge logs it as an error), :class:`UpstreamSaved`
(R21: a registration changed in what a restart must bring back; the edge stores it).
"""

from __future__ import annotations

import attrs

from scaserver.registrar.binding import Binding, BindingKey
from scaserver.registrar.midregstate import ForwardKey, UpstreamRegistration
from scaserver.registrar.upstream import UpstreamState
from scaserver.sip.actions import Fact, Instruction


@attrs.frozen
class PutBinding(Instruction):
    binding: Binding


@attrs.frozen
class DropBinding(Instruction):
    """Remove a binding; ``reason`` is ``unregistered``, ``upstream-rejected`` (3.5) or
    ``token-invalid`` (4.4)."""

    key: BindingKey
    reason: str


@attrs.frozen
class BindingConfirmed(Fact):
    """``binding.confirmed`` (section 1): the upstream accepted it, or it was absorbed."""

    aor: str
    key: BindingKey
    binding: Binding
    first_seen: float
    confirmed_at: float


@attrs.frozen
class RegisterDecided(Fact):
    """A device REGISTER was forwarded (``rule`` 1-5 of 3.2, ``mirror``, ``queued``) or
    absorbed (``absorb``), or answered locally (``555``, ``423``, ``503``...)."""

    aor: str
    rule: str
    at: float


@attrs.frozen
class RegisterForwarded(Instruction):
    aor: str
    keys: tuple[BindingKey, ...]


@attrs.frozen
class RegisterFinished(Instruction):
    """A forward ended; ``confirmed`` when a 2xx wrote the bindings."""

    aor: str
    keys: tuple[BindingKey, ...]
    confirmed: bool


@attrs.frozen
class UpstreamChanged(Fact):
    aor: str
    old: UpstreamState
    new: UpstreamState
    at: float


@attrs.frozen
class UpstreamAuthNeeded(Fact):
    """3.5: a challenge to our own REGISTER for ``aor`` could not be answered (``upstream_auth``
    ``none``, no credentials for the realm, or the upstream refused ours).  Published once, when
    the AoR's ``upstream_auth_needed`` flag is set; the edge logs it at error level."""

    aor: str
    status: int
    detail: str
    at: float


@attrs.frozen
class UpstreamSnapshot:
    """What a restart brings back of one upstream registration (3.5, R21): the registration
    dialog (Call-ID, last CSeq used), the state, expiry and granted lifetime, and what was
    learned from the upstream (``upstream_auth_needed``, ``floor`` from a 423)."""

    aor: str
    call_id: str
    cseq: int
    state: UpstreamState
    expires_at: float
    granted: int
    upstream_auth_needed: bool
    floor: int

    @classmethod
    def of(cls, reg: UpstreamRegistration) -> UpstreamSnapshot:
        return cls(
            reg.aor,
            reg.call_id,
            reg.cseq,
            reg.state,
            reg.expires_at,
            reg.granted,
            reg.upstream_auth_needed,
            reg.floor,
        )


@attrs.frozen
class UpstreamSaved(Fact):
    """Fact: an upstream registration changed in what a restart must bring back (its CSeq,
    state, expiry or flags); the edge stores ``snapshot`` (3.5: Call-ID and CSeq persisted)."""

    snapshot: UpstreamSnapshot


@attrs.frozen
class UpstreamGaveUp(Instruction):
    """Instruction: ``upstream_timeout`` fired before the transaction layer's own timer F;
    the dispatcher forgets the client transaction of ``context`` (late answers are stray)."""

    context: ForwardKey
