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
The same steps then run against Kamailio 5.6 with its tls module (``kamailio-tls-modules``)
and the reference's REGISTER path (bench/kamailio-tls/kamailio.cfg, 2 UDP + 2 TLS workers)
on the same certificate; ``--no-kamailio`` skips it.  Prints one JSON document with the
Kamailio/scaserver ratios.

    .venv/bin/python -m bench.tlsload                 # about 80 s
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

from bench.procs import answers_options, usage
from scaserver.sip.framing import StreamFramer
from tests.system.pki import Issued, TestAuthority, tls_table
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


KAMAILIO_CONFIG = Path(__file__).parent / "kamailio-tls" / "kamailio.cfg"
KAMAILIO_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {certificate}
private_key = {key}
"""


def steps(pid: int, sip_port: int, tls_port: int, ca: str, args: argparse.Namespace) -> dict[str, object]:
    """The four measurements against the server whose process tree is ``pid``."""
    return {
        "handshakes_tls13": handshakes(pid, tls_port, ca, args.seconds, "1.3"),
        "handshakes_tls12": handshakes(pid, tls_port, ca, args.seconds, "1.2"),
        "register_udp": registers(pid, sip_port, ca, "UDP", args),
        "register_tls": registers(pid, tls_port, ca, "TLS", args),
    }


def kamailio(workdir: Path, issued: Issued, ca: str, args: argparse.Namespace) -> dict[str, object]:
    """The same steps against Kamailio with the tls module, on the same certificate."""
    workdir.mkdir(parents=True)
    tls_cfg = workdir / "tls.cfg"
    tls_cfg.write_text(KAMAILIO_TLS_CFG.format(certificate=issued.certificate, key=issued.key))
    sip_port, tls_port = free_port(), free_port()
    command = [shutil.which("kamailio") or "kamailio", "-f", str(KAMAILIO_CONFIG), "-DD", "-E"]
    command += ["-m", "256", "-M", "32", "-w", str(workdir), "-P", str(workdir / "kamailio.pid")]
    for define in (
        "LISTEN_IP=127.0.0.1",
        f"SIP_PORT={sip_port}",
        f"TLS_PORT={tls_port}",
        f'TLS_CFG="{tls_cfg}"',
    ):
        command += ["-A", define]
    log = (workdir / "kamailio.log").open("ab")
    process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        if not answers_options(sip_port, 20.0):
            raise RuntimeError(f"kamailio did not start: {(workdir / 'kamailio.log').read_text()[-2000:]}")
        return steps(process.pid, sip_port, tls_port, ca, args)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def ratios(ours: dict[str, object], theirs: dict[str, object]) -> dict[str, float]:
    """Kamailio's figure over scaserver's, per step: rate, and server CPU per operation."""
    found: dict[str, float] = {}
    for step, unit in (
        ("handshakes_tls13", "handshake"),
        ("handshakes_tls12", "handshake"),
        ("register_udp", "register"),
        ("register_tls", "register"),
    ):
        mine, other = ours.get(step), theirs.get(step)
        if not isinstance(mine, dict) or not isinstance(other, dict) or "error" in mine or "error" in other:
            continue
        key = f"server_cpu_ms_per_{unit}"
        found[f"{step}_rate_kamailio_over_scaserver"] = round(
            other["per_second"] / max(mine["per_second"], 1e-9), 2
        )
        found[f"{step}_cpu_scaserver_over_kamailio"] = round(mine[key] / max(other[key], 1e-9), 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--no-kamailio", action="store_true", help="measure scaserver only")
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
        ca = str(authority.ca_file)
        result: dict[str, object] = {"load_average_before": Path("/proc/loadavg").read_text().split()[:3]}
        with running_server(workdir / "server", config) as server:
            result["scaserver"] = steps(server.process.pid, server.sip_port, tls_port, ca, args)
        if not args.no_kamailio:
            result["kamailio"] = kamailio(workdir / "kamailio", issued, ca, args)
            scaserver, other = result["scaserver"], result["kamailio"]
            assert isinstance(scaserver, dict) and isinstance(other, dict)
            result["ratios"] = ratios(scaserver, other)
        result["cores"] = len(os.sched_getaffinity(0))
        result["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
