"""SIP over TLS figures (bench/RESULTS.md "SIP over TLS").

Starts ``scaserver run`` on loopback with a throwaway CA's certificate (ECDSA P-256) and a
TLS listener, no digest, then measures:

* **TLS handshakes per second**: ``openssl s_time -new`` (full handshakes, no resumption, a C
  client) for ``--seconds``, at TLS 1.3 and at TLS 1.2 (ECDHE-ECDSA-AES128-GCM-SHA256);
* **REGISTER per second and server CPU per REGISTER**, over UDP and over TLS, from
  ``--clients`` Python clients (each its own process, one AoR each, ``--window`` REGISTERs in
  flight on one socket or one TLS connection) for ``--seconds``.  The server's CPU is the
  utime+stime of its process tree from /proc, read before and after.

SIPp from Debian is built without OpenSSL (``-t l1`` is refused), hence the Python clients.
Prints one JSON document.

    .venv/bin/python -m bench.tlsload                 # about 40 s
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.procs import usage
from scaserver.sip.framing import StreamFramer
from tests.system.pki import TestAuthority, tls_table
from tests.system.server import free_port, running_server

DOMAIN = "example.test"
CONFIG = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 1.0
[security]
allow = ["127.0.0.1/32"]
max_connections_per_address = 100000
max_connections = 100000
"""


def register(user: str, host: str, port: int, transport: str, n: int) -> bytes:
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{uuid.uuid4().hex}{n};rport\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=t{n}\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {user}-bench@{host}\r\nCSeq: {n} REGISTER\r\n"
        f"Contact: <sip:{user}@{host}:{port};transport={transport.lower()}>\r\nExpires: 600\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def udp_client(port: int, user: str, seconds: float, window: int, done: multiprocessing.Queue[int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    local = sock.getsockname()[1]
    sent = answered = 0
    deadline = time.monotonic() + seconds
    while sent < window:
        sent += 1
        sock.sendto(register(user, "127.0.0.1", local, "UDP", sent), ("127.0.0.1", port))
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        if data.startswith(b"SIP/2.0 200"):
            answered += 1
            sent += 1
            sock.sendto(register(user, "127.0.0.1", local, "UDP", sent), ("127.0.0.1", port))
    done.put(answered)


def tls_client(  # noqa: PLR0917 (a multiprocessing target takes its arguments positionally)
    port: int, ca_file: str, user: str, seconds: float, window: int, done: multiprocessing.Queue[int]
) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    local = sock.getsockname()[1]
    framer = StreamFramer(65535)
    sent = answered = 0
    deadline = time.monotonic() + seconds
    sock.sendall(b"".join(register(user, "127.0.0.1", local, "TLS", sent + i + 1) for i in range(window)))
    sent = window
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        if not data:
            break
        for message in framer.feed(data):
            if message.startswith(b"SIP/2.0 200"):
                answered += 1
                sent += 1
                sock.sendall(register(user, "127.0.0.1", local, "TLS", sent))
    sock.close()
    done.put(answered)


def registers(
    pid: int, port: int, ca_file: str, transport: str, args: argparse.Namespace
) -> dict[str, float]:
    done: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = []
    for i in range(args.clients):
        user = f"{transport.lower()}{i}"
        if transport == "UDP":
            worker = multiprocessing.Process(
                target=udp_client, args=(port, user, args.seconds, args.window, done)
            )
        else:
            worker = multiprocessing.Process(
                target=tls_client, args=(port, ca_file, user, args.seconds, args.window, done)
            )
        workers.append(worker)
    before, started = usage(pid).cpu_s, time.monotonic()
    for worker in workers:
        worker.start()
    total = sum(done.get(timeout=args.seconds + 30) for _ in workers)
    for worker in workers:
        worker.join()
    elapsed, cpu = time.monotonic() - started, usage(pid).cpu_s - before
    return {
        "registers": total,
        "per_second": round(total / elapsed, 1),
        "server_cpu_ms_per_register": round(1000 * cpu / max(total, 1), 3),
        "server_cpu_pct": round(100 * cpu / elapsed, 1),
    }


def handshakes(pid: int, port: int, ca_file: str, seconds: float, version: str) -> dict[str, float]:
    """Full handshakes per wall-clock second from one ``openssl s_time`` client, and the
    server's CPU per handshake."""
    command = [
        shutil.which("openssl") or "openssl",
        "s_time",
        "-connect",
        f"127.0.0.1:{port}",
        "-new",
        "-time",
        str(int(seconds)),
        "-CAfile",
        ca_file,
    ]
    command += ["-tls1_3"] if version == "1.3" else ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
    before, started = usage(pid).cpu_s, time.monotonic()
    output = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 30).stdout
    elapsed, cpu = time.monotonic() - started, usage(pid).cpu_s - before
    found = re.search(r"(\d+) connections in [\d.]+s", output)
    if found is None:
        return {"error": 1.0}
    count = int(found.group(1))
    return {
        "handshakes": count,
        "per_second": round(count / elapsed, 1),
        "server_cpu_ms_per_handshake": round(1000 * cpu / max(count, 1), 3),
        "server_cpu_pct": round(100 * cpu / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        authority = TestAuthority(workdir / "pki")
        issued = authority.issue(
            "server", common_name="localhost", dns=("localhost",), addresses=("127.0.0.1",)
        )
        tls_port = free_port()
        config = CONFIG + tls_table(issued, authority.ca_file, tls_port).replace(
            "handshake_timeout = 1.0", ""
        )
        with running_server(workdir / "server", config) as server:
            pid, ca = server.process.pid, str(authority.ca_file)
            result: dict[str, object] = {
                "handshakes_tls13": handshakes(pid, tls_port, ca, args.seconds, "1.3"),
                "handshakes_tls12": handshakes(pid, tls_port, ca, args.seconds, "1.2"),
            }
            result["register_udp"] = registers(pid, server.sip_port, ca, "UDP", args)
            result["register_tls"] = registers(pid, tls_port, ca, "TLS", args)
            result["cores"] = len(os.sched_getaffinity(0))
            result["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
