"""Flood containment figures (README "Security", bench/RESULTS.md "Flood containment").

Starts ``scaserver run`` on 127.0.0.1 (loopback only), then:

* a bystander on 127.0.0.3 sends OPTIONS at ``--probe-rate`` per second (below the limit)
  for the whole run and records each answer's latency (one not answered within 2 s is lost);
* after ``--warmup`` seconds, one flooder process on 127.0.0.2 (one core) sends OPTIONS,
  REGISTER and SUBSCRIBE in turn, as fast as it can, for ``--flood-seconds`` or
  ``--flood-count`` messages, whichever ends first;
* ``sec.bans`` is polled every 50 ms to time the ban from the first flood message;
* the server's RSS is sampled every 0.5 s: before (baseline), during and after the flood.

Prints one JSON document.  ``--no-security`` runs the same load with ``[security]
enabled = false`` for comparison.

    .venv/bin/python -m bench.flood                  # about 45 s
    .venv/bin/python -m bench.flood --no-security
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

from tests.system.server import running_server

FLOODER = "127.0.0.2"
BYSTANDER = "127.0.0.3"
HOARDER = "127.0.0.4"
CONFIG = """
[server]
domains = ["example.test"]
[auth]
require = true
[security]
enabled = {enabled}
rate = {rate}
burst = {burst}
allow = ["127.0.0.1/32"]
"""

TEMPLATES = (
    "OPTIONS sip:example.test SIP/2.0\r\n",
    "REGISTER sip:example.test SIP/2.0\r\n",
    "SUBSCRIBE sip:alice@example.test SIP/2.0\r\n",
)


def flood_message(start_line: str, host: str, port: int, n: int) -> bytes:
    method = start_line.split(" ", 1)[0]
    return (
        f"{start_line}"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKf{n};rport\r\n"
        f"From: <sip:flood@example.test>;tag=f{n}\r\n"
        f"To: <sip:alice@example.test>\r\n"
        f"Call-ID: flood-{n}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        + ("Event: call-info\r\n" if method == "SUBSCRIBE" else "")
        + "Contact: <sip:flood@127.0.0.2>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def flood(port: int, seconds: float, count: int, result: multiprocessing.Queue[dict[str, float]]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))
    local = sock.getsockname()[1]
    sock.setblocking(False)
    started = time.time()
    deadline = time.monotonic() + seconds
    sent = answers = 0
    last_answer = started
    while sent < count and time.monotonic() < deadline:
        try:
            sock.sendto(flood_message(TEMPLATES[sent % 3], FLOODER, local, sent), ("127.0.0.1", port))
            sent += 1
        except BlockingIOError:
            time.sleep(0.0005)
        if sent % 64 == 0:
            while True:
                try:
                    sock.recv(65535)
                except BlockingIOError:
                    break
                answers += 1
                last_answer = time.time()
    result.put(
        {
            "started": started,
            "ended": time.time(),
            "sent": sent,
            "answers": answers,
            "last_answer": last_answer,
        }
    )


class Bystander:
    """OPTIONS at a steady rate from 127.0.0.3; latencies by send time."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.interval = port, 1.0 / rate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((BYSTANDER, 0))
        self.sock.settimeout(0.2)
        self.sent: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.running = True

    def message(self, n: int) -> tuple[str, bytes]:
        call_id = f"probe-{n}"
        local = self.sock.getsockname()[1]
        return call_id, (
            f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {BYSTANDER}:{local};branch=z9hG4bKp{n};rport\r\n"
            f"From: <sip:probe@{BYSTANDER}>;tag=p{n}\r\nTo: <sip:127.0.0.1:{self.port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def send_loop(self) -> None:
        n, next_at = 0, time.monotonic()
        while self.running:
            call_id, data = self.message(n)
            self.sent[call_id] = time.time()
            self.sock.sendto(data, ("127.0.0.1", self.port))
            n += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def receive_loop(self) -> None:
        while self.running or any(k not in self.latency for k in self.sent):
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                if not self.running:
                    return
                continue
            now = time.time()
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"call-id:"):
                    call_id = line.split(b":", 1)[1].strip().decode()
                    if call_id in self.sent:
                        self.latency[call_id] = now - self.sent[call_id]

    def window(self, start: float, end: float) -> dict[str, float]:
        ids = [k for k, t in self.sent.items() if start <= t < end]
        answered = [self.latency[k] * 1000 for k in ids if k in self.latency and self.latency[k] < 2.0]
        lost = len(ids) - len(answered)
        return {
            "sent": len(ids),
            "lost": lost,
            "loss_pct": round(100.0 * lost / len(ids), 3) if ids else 0.0,
            "p50_ms": round(statistics.median(answered), 2) if answered else -1,
            "p99_ms": round(statistics.quantiles(answered, n=100)[98], 2) if len(answered) >= 100 else -1,
            "max_ms": round(max(answered), 2) if answered else -1,
        }


def hoard(port: int, count: int, hold_s: float) -> dict[str, int]:
    """Open ``count`` idle TCP connections from 127.0.0.4; how many are still open after
    ``hold_s`` seconds (the server closes those beyond its per-address limit at once)."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOARDER, 0))
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        sockets.append(sock)
    time.sleep(hold_s)
    open_count = 0
    for sock in sockets:
        try:
            alive = sock.recv(1) != b""
        except BlockingIOError:
            alive = True
        except OSError:
            alive = False
        open_count += alive
        sock.close()
    return {"attempted": count, "connected": len(sockets), "still_open": open_count}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bans(http_port: int) -> list[dict[str, object]]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sec.bans"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/RPC", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=2) as reply:
        result: list[dict[str, object]] = json.loads(reply.read())["result"]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--flood-count", type=int, default=2_000_000)
    parser.add_argument("--after", type=float, default=15.0)
    # Below the per-source rate (20/s by default): the bystander is a well-behaved peer.
    parser.add_argument("--probe-rate", type=float, default=15.0)
    parser.add_argument("--no-security", action="store_true")
    parser.add_argument("--rate", type=float, default=20.0, help="security.rate")
    parser.add_argument("--burst", type=float, default=60.0, help="security.burst")
    parser.add_argument("--tcp-connections", type=int, default=1000)
    args = parser.parse_args()
    with (
        TemporaryDirectory() as tmp,
        running_server(
            Path(tmp),
            CONFIG.format(
                enabled="false" if args.no_security else "true", rate=args.rate, burst=args.burst
            ),
        ) as server,
    ):
        pid = server.process.pid
        bystander = Bystander(server.sip_port, args.probe_rate)
        threads = [
            threading.Thread(target=bystander.send_loop),
            threading.Thread(target=bystander.receive_loop),
        ]
        for thread in threads:
            thread.start()
        samples: list[tuple[float, float]] = []
        time.sleep(1.0)
        t0 = time.time()
        while time.time() - t0 < args.warmup:
            samples.append((time.time(), rss_mb(pid)))
            time.sleep(0.5)
        result: multiprocessing.Queue[dict[str, float]] = multiprocessing.Queue()
        flooder = multiprocessing.Process(
            target=flood, args=(server.sip_port, args.flood_seconds, args.flood_count, result)
        )
        flood_start = time.time()
        flooder.start()
        banned_at: float | None = None
        while flooder.is_alive():
            now = time.time()
            if banned_at is None and not args.no_security:
                try:
                    found = [ban for ban in bans(server.http_port) if ban["source"] == FLOODER]
                except OSError:
                    found = []
                if found:
                    banned_at = float(str(found[0]["since"]))  # the server's clock: when it banned
            if len(samples) == 0 or now - samples[-1][0] >= 0.5:
                samples.append((now, rss_mb(pid)))
            time.sleep(0.05)
        flooder.join()
        figures = result.get(timeout=5)
        flood_end = figures["ended"]
        t1 = time.time()
        while time.time() - t1 < args.after:
            samples.append((time.time(), rss_mb(pid)))
            time.sleep(0.5)
        bystander.running = False
        for thread in threads:
            thread.join(5)
        during = [rss for t, rss in samples if flood_start <= t <= flood_end]
        tcp = hoard(server.sip_port, args.tcp_connections, 2.0)
        report = {
            "security": not args.no_security,
            "rate": args.rate,
            "burst": args.burst,
            "flood": {
                "messages_sent": figures["sent"],
                "seconds": round(flood_end - figures["started"], 2),
                "rate_per_s": round(figures["sent"] / max(flood_end - figures["started"], 1e-9)),
                "answers_received": figures["answers"],
                "last_answer_after_s": round(figures["last_answer"] - figures["started"], 3),
            },
            "banned_after_s": round(banned_at - figures["started"], 3) if banned_at else None,
            "bystander": {
                "before": bystander.window(t0, flood_start),
                "during": bystander.window(flood_start, flood_end),
                "during_after_ban": bystander.window(banned_at, flood_end) if banned_at else None,
                "after": bystander.window(flood_end, t1 + args.after - 2.0),
            },
            "idle_tcp": tcp,
            "rss_mb": {
                "baseline": max(rss for t, rss in samples if t < flood_start),
                "during_max": max(during) if during else None,
                "after_end": samples[-1][1],
            },
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
