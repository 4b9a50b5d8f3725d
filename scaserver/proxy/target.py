"""Targets of a proxied request and the order in which they are tried (RFC 3261 16.5, 16.6).

A :class:`Target` is one element of the target set of RFC 3261 section 16.5:
the URI that becomes the Request-URI of one branch (16.6 step 2), its q-value
(a Contact ``q`` parameter, 0.0..1.0, 1.0 when absent), the Path of the
binding it came from (RFC 3327: sent as Route header fields in front of any
existing ones), and the flow it must be sent on (RFC 5626 section 5.3, or the
``received`` address of a binding behind NAT), which overrides the next hop
that 16.6 step 7 would compute from Route and Request-URI.

Ordering follows RFC 3261 section 16.6 ("q-value"): targets of equal q are
tried in parallel, groups of decreasing q one after the other (serial
forking), the next group only when every branch of the previous one has
ended without a 2xx or 6xx (16.7 steps 5 and 6).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from scaserver.sip.message import Peer


@attrs.frozen
class Target:
    """One destination of a proxied request.

    ``uri`` is the Request-URI text for the branch; ``q`` its preference;
    ``path`` the Route values to put on top of the branch request, in order
    (the first one is the next hop); ``flow`` the transport address to send
    the branch to, or None to derive it from Route / Request-URI.
    """

    uri: str
    q: float = 1.0
    path: tuple[str, ...] = ()
    flow: Peer | None = None


def order_targets(targets: Iterable[Target]) -> list[tuple[Target, ...]]:
    """Group targets for forking: one tuple per distinct q-value, highest q first.

    Each tuple is tried in parallel; the tuples in turn (RFC 3261 section 16.6,
    "q-value" and section 16.7 step 5).  Within a group the input order is
    kept; a URI already present earlier is dropped, because 16.5 forbids
    adding a URI to the target set twice.
    """
    seen: set[str] = set()
    unique: list[Target] = []
    for target in targets:
        if target.uri in seen:
            continue
        seen.add(target.uri)
        unique.append(target)
    groups: dict[float, list[Target]] = {}
    for target in unique:
        groups.setdefault(target.q, []).append(target)
    return [tuple(groups[q]) for q in sorted(groups, reverse=True)]
