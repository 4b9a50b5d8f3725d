"""SIPp as the user agents of system tests: this project's scenarios
(``tests/system/scenarios``) run as processes, each bounded in time, with its own error log.

A phone here is a SIPp socket: :func:`register` binds a local port, registers the
user with digest authentication and exits; a UAS scenario then listens on that same
port (``t1`` binds the TCP client socket to it too), which is the Contact the server
stored, so the call comes back to it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.system.accounts import DOMAIN, injection_file
from tests.system.server import RunningServer, free_port, tool

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
MODES = {"udp": "u1", "tcp": "t1"}


@attrs.frozen
class SippResult:
    scenario: str
    returncode: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def report(self) -> str:
        return (
            f"sipp {self.scenario} exit {self.returncode}\n{self.output[-2500:]}\n"
            f"--- error log ---\n{self.errors[-4000:]}"
        )


@attrs.define
class Sipp:
    """One SIPp process."""

    scenario: str
    process: subprocess.Popen[str]
    error_log: Path
    port: int
    transport: str

    def wait(self, timeout: float = 60.0) -> SippResult:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate(timeout=5)
            output += f"\n(killed after {timeout} s)"
        errors = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        return SippResult(self.scenario, self.process.returncode, output, errors)

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Block until SIPp holds its port (a UAS must listen before it is called).

        Read from the kernel's socket tables, not by binding a probe socket, which could
        take the port from SIPp for an instant."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.wait(1).report())
            if _bound(self.transport, self.port):
                return
            time.sleep(0.05)
        raise AssertionError(f"sipp {self.scenario} never bound port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=5)


def require_ok(server: RunningServer, *results: SippResult) -> None:
    """Fail with every failed run's report and the server log's tail."""
    failed = [result.report() for result in results if not result.ok]
    assert not failed, "\n".join([*failed, "--- scaserver log ---", server.log()[-6000:]])


def _bound(transport: str, port: int) -> bool:
    """Whether a UDP socket is bound, or a TCP socket listens, on loopback ``port``
    (``/proc/net/udp`` and ``/proc/net/tcp``: local address in hex, state 0A = LISTEN)."""
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp")
    wanted = f"0100007F:{port:04X}"
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and (transport == "udp" or fields[3] == "0A"):
            return True
    return False


def start_sipp(
    scenario: str,
    server: RunningServer,
    workdir: Path,
    *,
    transport: str = "udp",
    port: int | None = None,
    calls: int = 1,
    rate: float | None = None,
    service: str = "",
    keys: Sequence[tuple[str, str]] = (),
    extra: Sequence[str] = (),
    timeout_s: float = 20.0,
) -> Sipp:
    """Start SIPp with ``scenario`` against ``server`` from local ``port`` (a free one if None).

    ``transport`` is ``udp`` or ``tcp``: one socket (``u1``/``t1``) for every call.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    error_log = workdir / f"{Path(scenario).stem}-{transport}-{port}-{time.monotonic_ns()}-errors.log"
    command = [
        tool("sipp"),
        "-sf",
        str(SCENARIOS / scenario),
        server.sip_address,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        MODES[transport],
        "-m",
        str(calls),
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(error_log),
        "-key",
        "domain",
        DOMAIN,
    ]
    if rate is not None:
        command += ["-r", str(rate)]
    if service:
        command += ["-s", service]
    for key, value in keys:
        command += ["-key", key, value]
    command += list(extra)
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Sipp(scenario, process, error_log, port, transport)


def start_register(
    server: RunningServer,
    workdir: Path,
    users: Sequence[tuple[str, str]],
    *,
    transport: str = "udp",
    port: int | None = None,
    rate: float | None = None,
    expires: int = 3600,
    timeout_s: float = 20.0,
) -> Sipp:
    """Register each ``(user, password)`` in turn (one SIPp call each) from one local port."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = injection_file(workdir / f"users-{time.monotonic_ns()}.csv", users)
    return start_sipp(
        "register.xml",
        server,
        workdir,
        transport=transport,
        port=port,
        calls=len(users),
        rate=rate,
        keys=[("expires", str(expires))],
        extra=["-inf", str(rows), "-auth_uri", DOMAIN],
        timeout_s=timeout_s,
    )


def register(
    server: RunningServer,
    workdir: Path,
    user: str,
    password: str,
    *,
    transport: str = "udp",
    port: int | None = None,
) -> SippResult:
    """Register ``user`` from ``port`` (its Contact) and wait for the 200."""
    return start_register(server, workdir, [(user, password)], transport=transport, port=port).wait()


def start_callee(
    scenario: str,
    server: RunningServer,
    workdir: Path,
    port: int,
    *,
    transport: str = "udp",
    calls: int = 1,
    answer_delay_ms: int = 0,
    timeout_s: float = 20.0,
) -> Sipp:
    """A UAS scenario (``uas-answer.xml``, ``uas-ring-cancelled.xml``) listening on ``port``
    for ``calls`` calls."""
    sipp = start_sipp(
        scenario,
        server,
        workdir,
        transport=transport,
        port=port,
        calls=calls,
        extra=["-d", str(answer_delay_ms)],
        timeout_s=timeout_s,
    )
    sipp.wait_listening()
    return sipp


def start_caller(
    scenario: str,
    server: RunningServer,
    workdir: Path,
    caller: tuple[str, str],
    callee: str,
    *,
    transport: str = "udp",
    calls: int = 1,
    rate: float | None = None,
    timeout_s: float = 20.0,
) -> Sipp:
    """A UAC scenario (``uac-call.xml``, ``uac-cancel.xml``) from ``caller`` (user, password)
    to ``callee``'s AoR."""
    user, password = caller
    return start_sipp(
        scenario,
        server,
        workdir,
        transport=transport,
        calls=calls,
        rate=rate,
        service=callee,
        keys=[("caller", user)],
        extra=["-au", user, "-ap", password, "-auth_uri", f"{callee}@{DOMAIN}"],
        timeout_s=timeout_s,
    )
