"""System tests: the real ``scaserver`` process on loopback, driven by external SIP tools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.server import RunningServer, running_server

OPEN_CONFIG = """
[server]
domains = ["example.test"]
[auth]
require = false
"""


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server that challenges nobody (for OPTIONS and transport tests)."""
    with running_server(tmp_path / "server", OPEN_CONFIG) as server:
        yield server
