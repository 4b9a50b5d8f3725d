"""A small authoritative DNS server for the system tests: ``twisted.names`` over UDP and TCP.

    python -m tests.system.dnszone HOST PORT ZONE.json [DELAY_S]

The zone file is a JSON list of records ``[name, type, ttl, *data]``: ``A`` (address),
``SRV`` (priority, weight, port, target), ``NAPTR`` (order, preference, flags, service,
replacement), ``CNAME`` (alias).  Every query is written on stderr as ``udp|tcp NAME``.
The file is read again on SIGHUP, so a test changes records while the server runs.  A name
with no record of any type is NXDOMAIN.  Answers larger than 512 bytes over UDP are truncated
(the client asks again over TCP), as a real server does.  ``DELAY_S`` delays every answer (a
benchmark's stand-in for a resolver across a network).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.names import common, dns, error, server

# twisted.names' server side is untyped: used through Any.
records: Any = dns
servers: Any = server
reactor: Any = global_reactor
ResolverBase: Any = common.ResolverBase


class Zone(ResolverBase):  # type: ignore[misc]
    def __init__(self, path: Path, delay: float = 0.0) -> None:
        super().__init__()
        self.path, self.delay = path, delay
        self.rows: list[list[Any]] = []
        self.load()

    def load(self) -> None:
        self.rows = json.loads(self.path.read_text())

    def _record(self, row: list[Any]) -> tuple[int, Any]:
        kind, ttl, data = row[1], int(row[2]), row[3:]
        if kind == "A":
            return dns.A, records.Record_A(data[0], ttl)
        if kind == "SRV":
            return dns.SRV, records.Record_SRV(data[0], data[1], data[2], data[3], ttl)
        if kind == "NAPTR":
            flags, service = data[2].encode(), data[3].encode()
            return dns.NAPTR, records.Record_NAPTR(data[0], data[1], flags, service, b"", data[4], ttl)
        if kind == "CNAME":
            return dns.CNAME, records.Record_CNAME(data[0], ttl)
        raise ValueError(kind)

    def _lookup(self, name: bytes | str, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        wanted = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        answers = []
        known = False
        for row in self.rows:
            if row[0].lower().rstrip(".") != wanted:
                continue
            known = True
            code, payload = self._record(row)
            if code in {type, dns.CNAME}:
                answers.append(dns.RRHeader(wanted, code, dns.IN, int(row[2]), payload, auth=True))
            if code == dns.CNAME:  # the whole chain from this zone, loops included
                seen = {wanted}
                target = str(row[3]).lower().rstrip(".")
                while target not in seen and len(seen) < 20:
                    seen.add(target)
                    nxt = [r for r in self.rows if r[0].lower().rstrip(".") == target]
                    for other in nxt:
                        other_code, other_payload = self._record(other)
                        answers.append(
                            dns.RRHeader(target, other_code, dns.IN, int(other[2]), other_payload, auth=True)
                        )
                    cnames = [r for r in nxt if r[1] == "CNAME"]
                    if not cnames:
                        break
                    target = str(cnames[0][3]).lower().rstrip(".")
                if target in seen:
                    # a loop: add the closing link too
                    answers.append(
                        dns.RRHeader(
                            target, dns.CNAME, dns.IN, 60, records.Record_CNAME(wanted, 60), auth=True
                        )
                    )
        if not known:
            result: defer.Deferred[Any] = defer.fail(error.DomainError(wanted))
        else:
            result = defer.succeed((answers, [], []))
        if self.delay:
            delayed: defer.Deferred[Any] = defer.Deferred()
            result.addBoth(lambda outcome: reactor.callLater(self.delay, delayed.callback, outcome))
            return delayed
        return result


class LoggingFactory(servers.DNSServerFactory):  # type: ignore[misc]
    """Writes ``udp|tcp NAME`` on stderr for every query (a test sees a TCP retry)."""

    def handleQuery(self, message: Any, protocol: Any, address: Any) -> Any:  # noqa: N802
        transport = "udp" if address is not None else "tcp"
        for query in message.queries:
            print(transport, query.name.name.decode(), file=sys.stderr, flush=True)
        return super().handleQuery(message, protocol, address)

    def sendReply(self, protocol: Any, message: Any, address: Any) -> None:  # noqa: N802
        if address is not None and len(message.toStr()) > 512:
            # RFC 1035 4.2.1: over UDP, an answer that does not fit is truncated.
            message.answers, message.authority, message.additional = [], [], []
            message.trunc = 1
        super().sendReply(protocol, message, address)


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    zone = Zone(path, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    factory = LoggingFactory(authorities=[zone])
    reactor.listenUDP(port, records.DNSDatagramProtocol(factory), interface=host)
    reactor.listenTCP(port, factory, interface=host)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(zone.load))
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
