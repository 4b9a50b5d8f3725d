"""A real NAT: the phone, a masquerading router and the server in three network namespaces.

The test builds, with pyroute2, a phone namespace (192.168.77.2/24), a router namespace that
masquerades (nftables) what the phone sends out of its 172.31.77.1 side, with UDP conntrack
entries that expire after :data:`NAT_TIMEOUT_S` idle seconds, and a server namespace
(172.31.77.2/24) with no route to the phone's private network.  The phone registers on a
shared line and subscribes to its call-info with its private Contact; the server is
restarted; then everything stays quiet for longer than the NAT's time-out.  With NAT pings
the INVITE and the NOTIFY that follow still reach the phone (the pings kept the mapping);
without them (the control) the pinhole has closed and neither arrives.

Runs as root only (namespaces, veth pairs and nftables need CAP_NET_ADMIN); the namespaces
are removed on the way out, whatever happens.  Private test addresses exist only inside the
namespaces: the host's interfaces are never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest

from tests.system.accounts import add_subscribers
from tests.system.handset import Handset, SipTimeout
from tests.system.server import ROOT, SCASERVER, options_request, upgrade_database

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
]

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
PHONE_ADDRESS, ROUTER_INSIDE = "192.168.77.2", "192.168.77.1"
ROUTER_OUTSIDE, SERVER_ADDRESS = "172.31.77.1", "172.31.77.2"
SIP_PORT, HTTP_PORT = 5060, 8080
NAT_TIMEOUT_S = 4
QUIET_S = 3 * NAT_TIMEOUT_S
"""How long nothing but the pings crosses the NAT before the INVITE and the NOTIFY."""


@attrs.frozen
class Topology:
    phone: str
    router: str
    server: str


def _netns_exec(namespace: str, *command: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *command], input=stdin, text=True, check=True)


@contextmanager
def topology() -> Iterator[Topology]:
    """Three namespaces wired phone - router (masquerade) - server; removed on exit."""
    from pyroute2 import IPRoute, NetNS, netns  # noqa: PLC0415 (root-only test: imported when it runs)

    tag = uuid.uuid4().hex[:6]
    names = Topology(f"scanat-p-{tag}", f"scanat-r-{tag}", f"scanat-s-{tag}")
    created: list[str] = []
    try:
        for name in (names.phone, names.router, names.server):
            netns.create(name)
            created.append(name)
        inside, outside = f"ni{tag}", f"no{tag}"
        with IPRoute() as ip:
            ip.link("add", ifname=inside, kind="veth", peer=f"pi{tag}")
            ip.link("add", ifname=outside, kind="veth", peer=f"so{tag}")
            for ifname, name in (
                (inside, names.router),
                (outside, names.router),
                (f"pi{tag}", names.phone),
                (f"so{tag}", names.server),
            ):
                ip.link("set", index=ip.link_lookup(ifname=ifname)[0], net_ns_fd=name)
        plan = {
            names.phone: [(f"pi{tag}", PHONE_ADDRESS)],
            names.router: [(inside, ROUTER_INSIDE), (outside, ROUTER_OUTSIDE)],
            names.server: [(f"so{tag}", SERVER_ADDRESS)],
        }
        for name, links in plan.items():
            with NetNS(name) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                for ifname, address in links:
                    index = ns.link_lookup(ifname=ifname)[0]
                    ns.addr("add", index=index, address=address, prefixlen=24)
                    ns.link("set", index=index, state="up")
                if name == names.phone:
                    ns.route("add", dst="0.0.0.0/0", gateway=ROUTER_INSIDE)
        _netns_exec(names.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            _netns_exec(names.router, "sysctl", "-qw", f"net.netfilter.{key}={NAT_TIMEOUT_S}")
        ruleset = (
            "table ip nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority 100; policy accept;\n"
            f'    oifname "{outside}" masquerade\n'
            "  }\n"
            "}\n"
        )
        _netns_exec(names.router, "nft", "-f", "-", stdin=ruleset)
        yield names
    finally:
        for name in created:
            netns.remove(name)


@contextmanager
def socket_namespace(namespace: str) -> Iterator[None]:
    """Sockets made in this block belong to ``namespace`` (this thread only)."""
    from pyroute2 import netns  # noqa: PLC0415

    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


def config(ping_interval: float) -> str:
    return f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = false
[database]
flush_interval = 0.2
[nat]
ping_interval = {ping_interval}
[security]
allow = ["172.31.77.0/24"]
[[sca.lines]]
aor = "{LINE}"
appearances = 2
"""


@contextmanager
def server_in(namespace: str, workdir: Path, text: str, db_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``scaserver run`` inside ``namespace``, answering OPTIONS on SERVER_ADDRESS."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "scaserver.toml").write_text(text)
    command = [
        "ip", "netns", "exec", namespace, *SCASERVER, "run",
        "--config", str(workdir / "scaserver.toml"),
        "--sip", f"{SERVER_ADDRESS}:{SIP_PORT}",
        "--http", f"127.0.0.1:{HTTP_PORT}",
        "--db", db_url,
    ]  # fmt: skip
    log = workdir / "scaserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        with socket_namespace(namespace):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            probe.settimeout(0.3)
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"scaserver exited:\n{log.read_text()}")
                probe.sendto(options_request(SIP_PORT), (SERVER_ADDRESS, SIP_PORT))
                try:
                    probe.recv(65535)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"scaserver never answered:\n{log.read_text()}") from None
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class PingAnswers:
    """Answers the OPTIONS pings that reach ``phone`` with 200, in a thread, counting them."""

    def __init__(self, phone: Handset) -> None:
        self.phone, self.count = phone, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ping-answers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ping = self.phone.expect_request("OPTIONS", timeout=0.3)
            except SipTimeout:
                continue
            self.phone.respond(ping, 200)
            self.count += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class PhoneKeepalives:
    """A CRLF keep-alive from the phone every second while the block runs."""

    def __init__(self, phone: Handset) -> None:
        self._phone = phone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phone-keepalives", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._phone.send_bytes(b"\r\n\r\n")

    def __enter__(self) -> PhoneKeepalives:
        self._phone.send_bytes(b"\r\n\r\n")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def run_scenario(tmp_path: Path, ping_interval: float) -> tuple[bool, bool, int]:
    """Register and subscribe from behind the NAT, restart the server, stay quiet for
    QUIET_S; whether the INVITE and the NOTIFY then reach the phone, and how many pings did."""
    db_url = f"sqlite:///{tmp_path / 'nat.db'}"
    upgrade_database(db_url)
    add_subscribers(db_url, [("carol", "c-secret")])
    text = config(ping_interval)
    with topology() as names, ExitStack() as stack:
        server = stack.enter_context(server_in(names.server, tmp_path / "first", text, db_url))
        with socket_namespace(names.phone):
            phone = Handset("phone", (SERVER_ADDRESS, SIP_PORT), line=LINE, host=PHONE_ADDRESS)
        stack.callback(phone.close)
        answers = PingAnswers(phone)
        stack.callback(answers.stop)
        assert phone.contact.startswith(f"sip:2001@{PHONE_ADDRESS}:")
        assert phone.register().status == 200
        response, dialog, _ = phone.subscribe("call-info")
        assert response.status == 202
        phone.wait_notify(lambda n: n.call_id == dialog.call_id)
        time.sleep(0.6)  # the write-behind flush (0.2 s) stores binding and subscription

        # While the server restarts the phone sends its own CRLF keep-alives (RFC 5626 4.4.1,
        # as a real phone does), so that its mapping outlives the restart; after that only
        # the server's pings (or, for the control, nothing) cross the NAT.
        with PhoneKeepalives(phone):
            server.send_signal(signal.SIGTERM)
            assert server.wait(10) == 0
            stack.enter_context(server_in(names.server, tmp_path / "second", text, db_url))
        time.sleep(QUIET_S)
        seen = len(phone.notifies)

        with socket_namespace(names.server):
            seizer = Handset("seizer", (SERVER_ADDRESS, SIP_PORT), line=LINE, host=SERVER_ADDRESS)
            carol = Handset(
                "carol", (SERVER_ADDRESS, SIP_PORT), line=f"sip:carol@{DOMAIN}", host=SERVER_ADDRESS
            )
        stack.callback(seizer.close)
        stack.callback(carol.close)
        seize, _, _ = seizer.subscribe("line-seize", index=1, expires=10)
        assert seize.status == 200
        try:
            phone.wait_notify(lambda n: n.state_of(1) == "seized", after=seen, timeout=4.0)
            notified = True
        except SipTimeout:
            notified = False
        carol.invite(LINE)
        try:
            phone.expect_request("INVITE", timeout=4.0)
            invited = True
        except SipTimeout:
            invited = False
        return notified, invited, answers.count


def test_invite_and_notify_reach_the_nated_phone_after_restart_and_nat_timeout_thanks_to_pings(
    tmp_path: Path,
) -> None:
    notified, invited, pings = run_scenario(tmp_path, ping_interval=1.5)
    assert pings >= QUIET_S / 1.5 - 2, pings
    assert notified, "the NOTIFY did not cross the NAT"
    assert invited, "the INVITE did not cross the NAT"


def test_control_without_pings_the_pinhole_closes_and_nothing_arrives(tmp_path: Path) -> None:
    notified, invited, pings = run_scenario(tmp_path, ping_interval=0.0)
    assert pings == 0
    assert not notified, "a NOTIFY crossed a NAT whose mapping should have expired"
    assert not invited, "an INVITE crossed a NAT whose mapping should have expired"
