"""A wheel built from the tree, installed in a new virtualenv outside it, is a working server.

The virtualenv gets the wheel's declared dependencies from the package index (not the test
environment's), and every command runs from another directory with no PYTHONPATH, so a
file read from the source tree or an undeclared import fails here.  pip's download cache is
kept between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.system.server import free_port, options_request, udp_exchange

ROOT = Path(__file__).resolve().parents[2]
_SOURCE_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "var", "tests", "bench", ".*_cache"
)

# The wheel is built and installed once for the module: its tests stay in one pytest-xdist worker.
pytestmark = [pytest.mark.system, pytest.mark.timeout(900), pytest.mark.xdist_group("wheel")]


@attrs.frozen
class Installed:
    bin: Path
    cwd: Path

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return dict(env, PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")

    def run(self, program: str, *argv: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / program), *argv],
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == status, f"{program} {' '.join(argv)}: {done.returncode}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_SOURCE_IGNORED)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("scaserver-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=base,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
    )
    shutil.rmtree(source)  # nothing may be read from a source tree
    cwd = base / "elsewhere"
    cwd.mkdir()
    yield Installed(venv / "bin", cwd)


def test_version_from_the_console_script_and_python_m(installed: Installed) -> None:
    assert installed.run("scaserver", "--version").stdout.startswith("scaserver ")
    assert installed.run("python", "-m", "scaserver", "--version").stdout.startswith("scaserver ")
    located = installed.run("python", "-c", "import scaserver; print(scaserver.__file__)").stdout
    assert str(installed.bin.parent) in located


def test_database_directory_and_provisioning_commands(installed: Installed) -> None:
    """With the default configuration: the database is var/scaserver.db under the working directory."""
    assert "database at revision" in installed.run("scaserver", "db", "upgrade").stdout
    assert "up to date" in installed.run("scaserver", "db", "current").stdout
    assert (installed.cwd / "var" / "scaserver.db").exists()
    installed.run("scaserver", "subscriber", "add", "alice@example.test", "--password", "secret")
    assert "alice@example.test" in installed.run("scaserver", "subscriber", "list").stdout
    installed.run("scaserver", "trusted", "add", "192.0.2.0/24", "--tag", "pbx")
    assert "192.0.2.0/24" in installed.run("scaserver", "trusted", "list").stdout
    installed.run("scaserver", "line", "add", "sip:2001@example.test", "--appearances", "2")
    assert "2001@example.test" in installed.run("scaserver", "line", "list").stdout
    aor = "sip:2002@example.test"
    installed.run("scaserver", "device", "identity", aor, "--auth-user", "2002", "--password", "secret")
    installed.run(
        "scaserver", "device", "add", "0004f2aabbcc", "--family", "polycom-ucs", "--model", "VVX411",
        "--line", aor,
    )  # fmt: skip
    assert "0004f2aabbcc" in installed.run("scaserver", "device", "list").stdout.lower()
    rendered = installed.run("scaserver", "provision", "render", "0004f2aabbcc").stdout
    assert "2002" in rendered and "<" in rendered  # a profile from the packaged templates
    assert "0004f2aabbcc" in installed.run("scaserver", "device", "show", "0004f2aabbcc").stdout.lower()
    installed.run("scaserver", "line", "members", "sip:2001@example.test", "--add", "alice")
    assert "alice" in installed.run("scaserver", "line", "members", "sip:2001@example.test").stdout
    for argv in (
        ("device", "rm", "0004f2aabbcc"),
        ("line", "rm", "sip:2001@example.test"),
        ("trusted", "rm", "192.0.2.0/24"),
        ("subscriber", "rm", "alice@example.test"),
    ):
        installed.run("scaserver", *argv)
    assert "alice@example.test" not in installed.run("scaserver", "subscriber", "list").stdout
    report = installed.run("scaserver", "report", "line-calls", "--format", "json").stdout
    assert json.loads(report)["report"] == "line-calls"
    config = installed.cwd / "scaserver.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:5060"]\n')
    assert "OK" in installed.run("scaserver", "check-config", str(config)).stdout


def test_optional_extras_missing_are_named(installed: Installed) -> None:
    installed.run("scaserver", "db", "upgrade")
    png = installed.run(
        "scaserver", "report", "busy-hour", "--format", "png", "--output", "x.png", status=2
    ).stderr
    assert "scaserver[charts]" in png and "Traceback" not in png
    pg = installed.run("scaserver", "db", "upgrade", "--db", "postgresql+psycopg://u@127.0.0.1:1/x", status=1)
    assert "scaserver[postgresql]" in pg.stderr and "Traceback" not in pg.stderr
    pg_run = installed.run("scaserver", "run", "--db", "postgresql+psycopg://u@127.0.0.1:1/x", status=1)
    assert "scaserver[postgresql]" in pg_run.stderr and "Traceback" not in pg_run.stderr


def test_run_answers_options_health_and_scactl_then_stops(installed: Installed) -> None:
    installed.run("scaserver", "db", "upgrade")
    sip, http = free_port(), free_port()
    log = installed.cwd / "run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(installed.bin / "scaserver"),
                "run",
                "--sip",
                f"127.0.0.1:{sip}",
                "--http",
                f"127.0.0.1:{http}",
            ],
            cwd=installed.cwd,
            env=installed.env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while udp_exchange(sip, options_request(sip), timeout=0.3) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=5) as health:
            assert json.loads(health.read())["status"] == "ok"
        address = f"http://127.0.0.1:{http}/RPC"
        version = installed.run("scactl", "-s", address, "-F", "json", "core.version").stdout
        assert "scaserver" in version
        assert "sca.all_appearances" in installed.run("scactl", "completion", "bash").stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert "http://127.0.0.1:8080/RPC" in installed.run("scactl", "--help").stdout  # the server's default
