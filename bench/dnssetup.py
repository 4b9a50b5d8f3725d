"""DNS cache effect on call set-up: INVITE to 200 through an upstream reached by name.

    python -m bench.dnssetup [--calls N] [--delay-ms D] [--out DIR]

Starts a DNS server (``tests/system/dnszone.py``: ``twisted.names``, each answer delayed by
``--delay-ms`` to stand in for a resolver across a network) serving ``_sip._udp.pbx.test`` SRV
and A records with a 2 s TTL, a UAS answering 200 at the SRV target, and scaserver with
``[upstream] host = "pbx.test"``, ``port = 0`` (SRV decides).  A trusted caller sends INVITEs
to a foreign domain.  Two figures, both on a warm process:

* ``cached``: set-up time while the SRV and A records are in the cache (no DNS asked);
* ``expired``: the first call after the TTL ran out (SRV, A and AAAA asked again).

Loopback only; every call bounded by a time-out.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, ROOT
from bench.sipua import HOST, Endpoint, ok_response, request

TTL = 2
CONFIG = """
[server]
domains = ["bench.test"]
[auth]
require = false
[upstream]
host = "pbx.test"
port = 0
transport = "udp"
[dns]
servers = ["{host}:{dns}"]
[database]
flush_interval = 1.0
"""


def one_call(
    number: int, caller: Endpoint, uas: Endpoint, server: tuple[str, int], timeout: float
) -> float | None:
    """INVITE -> 200 time in seconds, or None when it failed."""
    invite = request(
        "INVITE",
        "sip:bob@elsewhere.example.net",
        local_port=caller.port,
        from_uri="sip:caller@bench.test",
        from_tag=f"c{number}",
        to_uri="sip:bob@elsewhere.example.net",
        call_id=f"dns-{number}-{os.getpid()}@bench",
        cseq=1,
        contact=f"sip:caller@{HOST}:{caller.port}",
    )
    sent = time.time()  # the clock of the kernel receive timestamps
    caller.send(invite, server)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([caller.sock, uas.sock], [], [], 0.05)
        for message, source in uas.receive(0.0):
            if message.is_request and message.method == "INVITE":
                uas.send(ok_response(message), source)
        for message, _ in caller.receive(0.0):
            if not message.is_request and message.status == 200:
                return message.arrived - sent
            if not message.is_request and message.status >= 300:
                return None
    return None


def wait_ready(caller: Endpoint, server: tuple[str, int], timeout: float = 60.0) -> None:
    """Until the server answers an OPTIONS (start-up takes a few seconds on a busy machine)."""
    deadline = time.monotonic() + timeout
    number = 0
    while time.monotonic() < deadline:
        number += 1
        caller.send(
            request(
                "OPTIONS",
                f"sip:{server[0]}:{server[1]}",
                local_port=caller.port,
                from_uri="sip:caller@bench.test",
                from_tag=f"o{number}",
                to_uri=f"sip:{server[0]}:{server[1]}",
                call_id=f"ready-{number}-{os.getpid()}@bench",
                cseq=1,
                contact=f"sip:caller@{HOST}:{caller.port}",
            ),
            server,
        )
        for message, _ in caller.receive(0.3):
            if not message.is_request:
                return
    raise RuntimeError("scaserver never answered OPTIONS")


def measure(calls: int, out: Path, *, delay_ms: float = 20.0, timeout: float = 10.0) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{out / 'dnssetup.db'}"
    (out / "dnssetup.db").unlink(missing_ok=True)
    cli = [str(PYTHON), "-m", "scaserver.cli"]
    subprocess.run(
        [*cli, "db", "upgrade", "--db", db_url], cwd=ROOT, check=True, capture_output=True, timeout=120
    )
    subprocess.run(
        [*cli, "trusted", "add", f"{HOST}/32", "--db", db_url],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    caller, uas = Endpoint(), Endpoint()
    sip_port, dns_port = Endpoint().port, Endpoint().port  # free UDP ports (closed again)
    zone = out / "zone.json"
    zone.write_text(
        json.dumps(
            [
                ["_sip._udp.pbx.test", "SRV", TTL, 10, 0, uas.port, "uas.pbx.test"],
                ["uas.pbx.test", "A", TTL, HOST],
            ]
        )
    )
    dns = subprocess.Popen(
        [str(PYTHON), "-m", "tests.system.dnszone", HOST, str(dns_port), str(zone), str(delay_ms / 1000.0)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = out / "dnssetup.toml"
    config.write_text(CONFIG.format(host=HOST, dns=dns_port))
    log = (out / "dnssetup.log").open("wb")
    process = subprocess.Popen(
        [*cli, "run", "--config", str(config), "--sip", f"{HOST}:{sip_port}", "--http", f"{HOST}:0",
         "--db", db_url],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cached: list[float] = []
    expired: list[float] = []
    failures = 0
    number = 0
    try:
        wait_ready(caller, (HOST, sip_port))
        for _ in range(max(3, calls // 10)):
            time.sleep(TTL + 0.3)  # the records expire: the next call asks DNS again
            for batch in range(10):
                number += 1
                took = one_call(number, caller, uas, (HOST, sip_port), timeout)
                if took is None:
                    failures += 1
                elif batch == 0:
                    expired.append(took * 1000.0)
                else:
                    cached.append(took * 1000.0)
    finally:
        process.terminate()
        process.wait(10)
        dns.terminate()
        dns.wait(10)
        caller.close()
        uas.close()
        log.close()

    def summary(values: list[float]) -> dict[str, float | int | None]:
        ordered = sorted(values)
        return {
            "n": len(ordered),
            "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
            "max_ms": round(ordered[-1], 2) if ordered else None,
        }

    return {
        "dns_delay_ms": delay_ms,
        "failures": failures,
        "cached": summary(cached),
        "expired": summary(expired),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dnssetup", description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scaserver-bench/dnssetup"))
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.calls, args.out, delay_ms=args.delay_ms)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
