"""Which SIP domains are ours: the one answer the registrar, the proxy, SCA, digest and
provisioning all use.

A domain is ours by one of three rules, checked in this order:

1. ``server.domains``: the configuration lists it.  When the list is not empty it is the
   whole truth about names (the server's own addresses aside): a subscriber or a line of
   another domain in the database does not make that domain ours.
2. ``directory``: with no ``server.domains`` configured, the domain of a subscriber or of a
   shared line in the database (``scaserver subscriber add alice@example.test`` is enough).
3. ``server address``: the advertised host, its aliases and the listen addresses (a request
   to ``sip:alice@192.0.2.10`` is for us whatever the configuration says).

Domain names compare case-insensitively (RFC 3261 section 19.1.4).  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value.lower() for value in values if value)


@attrs.frozen
class DomainPolicy:
    """The domains we are registrar and proxy for, and the rule that makes each one ours.

    ``configured``: ``server.domains``; ``directory``: the domains of the subscribers and
    lines in the database (used only when nothing is configured); ``addresses``: the
    server's own host names and addresses.  ``host in policy`` asks whether a domain is ours.
    """

    configured: frozenset[str] = attrs.field(default=frozenset(), converter=_lower)
    directory: frozenset[str] = attrs.field(default=frozenset(), converter=_lower)
    addresses: frozenset[str] = attrs.field(default=frozenset(), converter=_lower)

    @property
    def names(self) -> frozenset[str]:
        """Every domain name that is ours (without the server's addresses)."""
        return self.configured if self.configured else self.directory

    def rule_for(self, host: str) -> str | None:
        """The rule that makes ``host`` ours (``server.domains``, ``directory``, ``server
        address``), None when it is not ours."""
        name = host.lower()
        if self.configured and name in self.configured:
            return "server.domains"
        if not self.configured and name in self.directory:
            return "directory"
        if name in self.addresses:
            return "server address"
        return None

    def is_ours(self, host: str) -> bool:
        return self.rule_for(host) is not None

    def why_not(self, host: str) -> str:
        """Why ``host`` is not ours, in words an operator can act on (for a refusal's log line)."""
        if self.configured:
            rule = "not in server.domains (" + ", ".join(sorted(self.configured)) + ")"
        elif self.directory:
            rule = (
                "no server.domains; not the domain of a subscriber or line ("
                + ", ".join(sorted(self.directory))
                + ")"
            )
        else:
            rule = "no server.domains and no subscriber or line in the database"
        return f"domain {host.lower()!r} is not ours: {rule}, nor an address of this server"

    def with_directory(self, domains: Iterable[str]) -> DomainPolicy:
        return attrs.evolve(self, directory=self.directory | _lower(domains))

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and self.is_ours(host)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names | self.addresses))

    def __len__(self) -> int:
        return len(self.names | self.addresses)


def as_domain_policy(value: DomainPolicy | Iterable[str]) -> DomainPolicy:
    """A policy from a policy, or from a set of configured domain names (engine settings
    built by hand, in tests)."""
    if isinstance(value, DomainPolicy):
        return value
    return DomainPolicy(configured=_lower(value))
