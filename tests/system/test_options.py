"""OPTIONS against the real server over UDP and TCP, from sipsak and SIPp (issue: the server
answers keep-alive pings with 200)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.system.server import SHARED, RunningServer, free_port, options_request, tool, udp_exchange

pytestmark = pytest.mark.system


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipsak_ping_gets_200(open_server: RunningServer, transport: str) -> None:
    result = subprocess.run(
        [tool("sipsak"), "-s", f"sip:ping@127.0.0.1:{open_server.sip_port}", "-E", transport, "-vv"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIP/2.0 200 OK" in result.stdout


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_scenario_gets_200(open_server: RunningServer, transport: str, tmp_path: Path) -> None:
    scenario = SHARED / "conformance" / "pjsip-sipp" / "uac-options.xml"
    result = subprocess.run(
        [
            tool("sipp"),
            "-sf",
            str(scenario),
            open_server.sip_address,
            "-m",
            "3",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-t",
            transport,
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(tmp_path / "errors.log"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr + open_server.log()[-3000:]


def test_server_stops_cleanly_on_sigterm_and_sigint(open_server: RunningServer) -> None:
    assert open_server.stop(signal.SIGTERM) == 0


def test_corrupt_input_does_not_stop_the_server(open_server: RunningServer) -> None:
    port = open_server.sip_port
    for garbage in (
        b"",
        b"\r\n\r\n",
        b"\x00" * 100,
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        bytes(range(256)),
    ):
        udp_exchange(port, garbage, timeout=0.05)
    response = udp_exchange(port, options_request(port))
    assert response is not None and response.startswith(b"SIP/2.0 200 ")
