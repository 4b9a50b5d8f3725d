"""Push-parking overhead: time from a woken mobile's REGISTER to the INVITE branch reaching it.

    python -m bench.pushpark [--calls N] [--out DIR]

Starts scaserver with ``[push]`` on (no mid-registrar: the core registrar keeps the RFC 8599
binding), a push gateway played by an HTTP server here, a mobile that registered with
``pn-*`` parameters and a caller.  For each call: the caller's INVITE is parked and pushed;
the gateway, on the ``call`` push, makes the mobile REGISTER at once and notes the time; the
figure is the time until the mobile receives the INVITE branch (it then answers 486, and the
caller ACKs).  Loopback only; every call bounded by a time-out.  Kamailio has no push parking
in the reference configuration, so this figure has no ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, ROOT, START_TIMEOUT_S, answers_options
from bench.sipua import HOST, Endpoint, SipMessage, request

DOMAIN = "bench.test"
MOBILE = "mobile"
PN = "pn-provider=apns;pn-prid=0123456789abcdef0123456789abcdef;pn-param=ABCDE12345.com.example.voip"
CONFIG = """
[server]
domains = ["{domain}"]
[auth]
require = false
[push]
enabled = true
gateway_url = "http://127.0.0.1:{gateway}/push"
[database]
flush_interval = 1.0
"""


class Mobile:
    """The woken phone: one UDP socket; REGISTERs with its push contact."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.endpoint = Endpoint()
        self.server = server
        self.cseq = 0
        self.woken_at: float | None = None
        self.lock = threading.Lock()

    def register(self) -> None:
        with self.lock:
            self.cseq += 1
            aor = f"sip:{MOBILE}@{DOMAIN}"
            data = request(
                "REGISTER",
                f"sip:{DOMAIN}",
                local_port=self.endpoint.port,
                from_uri=aor,
                from_tag="mob",
                to_uri=aor,
                call_id=f"reg-mobile-{os.getpid()}@bench",
                cseq=self.cseq,
                contact=f"sip:{MOBILE}@{HOST}:{self.endpoint.port};{PN}",
                extra=("Expires: 600",),
            )
            self.woken_at = time.time()  # the clock of the kernel receive timestamps
            self.endpoint.send(data, self.server)


class Gateway:
    """The push gateway: 202 to every push; a ``call`` push wakes the mobile at once."""

    def __init__(self, mobile: Mobile) -> None:
        self.pushes = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body: dict[str, Any] = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                )
                answer = b'{"status":"sent"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if body.get("type") == "call":
                    gateway.pushes += 1
                    mobile.register()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.http.server_address[1])
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def ack_for(invite: bytes, final: SipMessage) -> bytes:
    """The ACK of a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's top Via."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    uri = head[0].split(" ")[1]
    keep = [line for line in head[1:] if line.split(":", 1)[0] in ("Via", "From", "Call-ID")]
    cseq = final.cseq[0]
    lines = [
        f"ACK {uri} SIP/2.0",
        *keep,
        f"To: {final.header('to')}",
        f"CSeq: {cseq} ACK",
        "Max-Forwards: 70",
    ]
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def one_call(
    number: int, caller: Endpoint, mobile: Mobile, server: tuple[str, int], timeout: float
) -> float | None:
    """Place one call; the REGISTER-to-INVITE time of the mobile, or None when it failed."""
    mobile.woken_at = None
    invite = request(
        "INVITE",
        f"sip:{MOBILE}@{DOMAIN}",
        local_port=caller.port,
        from_uri=f"sip:caller@{DOMAIN}",
        from_tag=f"c{number}",
        to_uri=f"sip:{MOBILE}@{DOMAIN}",
        call_id=f"park-{number}-{os.getpid()}@bench",
        cseq=1,
        contact=f"sip:caller@{HOST}:{caller.port}",
    )
    caller.send(invite, server)
    deadline = time.monotonic() + timeout
    latency: float | None = None
    while time.monotonic() < deadline and latency is None:
        for message, source in mobile.endpoint.receive(0.05):
            if message.is_request and message.method == "INVITE":
                woken = mobile.woken_at
                latency = None if woken is None else message.arrived - woken
                mobile.endpoint.send(response_486(message), source)
            elif message.is_request and message.method == "ACK":
                continue
    finished = False
    while time.monotonic() < deadline and not finished:
        for message, _ in caller.receive(0.05):
            if not message.is_request and message.status >= 300:
                caller.send(ack_for(invite, message), server)
                finished = True
        for message, source in mobile.endpoint.receive(0.0):
            if message.is_request and message.method == "INVITE":
                mobile.endpoint.send(response_486(message), source)
    return latency


def listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Returns once the server on HOST:``port`` answers OPTIONS; RuntimeError when it exits
    first or does not answer within START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        exited = process.poll()
        if exited is not None:
            raise RuntimeError(f"scaserver exited with {exited} before answering OPTIONS; see {log}")
        if answers_options(port, 1.0):
            return
    waited = f"{START_TIMEOUT_S:.0f} s"
    raise RuntimeError(f"scaserver did not answer OPTIONS on {HOST}:{port} in {waited}; see {log}")


def registered_with(mobile: Mobile, timeout: float = 5.0) -> None:
    """The mobile's first REGISTER, answered 200 by the server (or RuntimeError)."""
    mobile.register()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message, _ in mobile.endpoint.receive(0.1):
            if not message.is_request and message.status >= 200:
                if message.status != 200:
                    raise RuntimeError(f"the mobile's REGISTER was answered {message.status}")
                return
    raise RuntimeError(f"the mobile's REGISTER had no final answer within {timeout} s")


def response_486(invite: SipMessage) -> bytes:
    """486 Busy Here to a received INVITE (RFC 3261 8.2.6: Via, From, To + tag, Call-ID, CSeq)."""
    lines = ["SIP/2.0 486 Busy Here", *(f"Via: {via}" for via in invite.all("via"))]
    lines += [f"From: {invite.header('from')}", f"To: {invite.header('to')};tag=mob486"]
    lines += [f"Call-ID: {invite.call_id}", f"CSeq: {invite.header('cseq')}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def measure(calls: int, out: Path, timeout: float = 10.0) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{out / 'pushpark.db'}"
    (out / "pushpark.db").unlink(missing_ok=True)
    upgrade = [str(PYTHON), "-m", "scaserver.cli", "db", "upgrade", "--db", db_url]
    subprocess.run(upgrade, cwd=ROOT, check=True, capture_output=True, timeout=120)
    caller = Endpoint()
    sip_port = Endpoint().port  # a free UDP port; closed again below
    mobile = Mobile((HOST, sip_port))
    gateway = Gateway(mobile)
    config = out / "pushpark.toml"
    config.write_text(CONFIG.format(domain=DOMAIN, gateway=gateway.port))
    log = (out / "pushpark.log").open("wb")
    process = subprocess.Popen(
        [str(PYTHON), "-m", "scaserver.cli", "run", "--config", str(config), "--sip", f"{HOST}:{sip_port}",
         "--http", f"{HOST}:0", "--db", db_url],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    latencies: list[float] = []
    failures = 0
    try:
        # The mobile registers only once the server answers: on a loaded machine a fixed wait
        # sent the REGISTER before the server listened, and every INVITE then got 404.
        listening(process, sip_port, out / "pushpark.log")
        registered_with(mobile)
        for number in range(calls):
            latency = one_call(number, caller, mobile, (HOST, sip_port), timeout)
            if latency is None:
                failures += 1
            else:
                latencies.append(latency * 1000.0)
    finally:
        process.terminate()
        process.wait(10)
        gateway.close()
        caller.close()
        mobile.endpoint.close()
        log.close()
    ordered = sorted(latencies)
    return {
        "calls": calls,
        "failures": failures,
        "pushes": gateway.pushes,
        "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2) if ordered else None,
        "max_ms": round(ordered[-1], 2) if ordered else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pushpark", description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scaserver-bench/pushpark"))
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.calls, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
