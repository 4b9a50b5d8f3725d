"""``/health`` and ``/ready`` of the real server: no token needed, and ``/ready`` follows the
database: 503 naming the database while its PostgreSQL cluster is stopped, 200 once it is
back, while SIP keeps answering throughout."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PgServer, _start_cluster
from tests.system.server import RunningServer, options_request, running_server, udp_exchange

pytestmark = pytest.mark.system

TOKEN_CONFIG = '[rpc]\nadmin_token_file = "{token}"\n'


def get(server: RunningServer, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(server: RunningServer, path: str, status: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        code, body = get(server, path)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"{path} stayed {code}: {body}\n{server.log()}"
        time.sleep(0.2)


def test_health_and_ready_need_no_token_while_rpc_does(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with running_server(tmp_path / "server", TOKEN_CONFIG.format(token=token)) as server:
        code, health = get(server, "/health")
        assert code == 200 and health["status"] == "ok" and health["version"]
        ready = wait_for(server, "/ready", 200)
        assert ready["status"] == "ready" and ready["failing"] == []
        assert set(ready["checks"]) == {"restored", "database", "write_behind"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.http_port}/RPC",
            data=b'{"jsonrpc": "2.0", "method": "core.version", "id": 1}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401


@pytest.fixture
def own_cluster(pg: PgServer) -> Iterator[PgServer]:
    """A PostgreSQL cluster of this test alone (it is stopped and started again)."""
    if not pg.owned:
        pytest.skip("stopping PostgreSQL needs a cluster the tests own (not SCASERVER_TEST_PG_URL)")
    cluster = _start_cluster()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by a failed test
            cluster.stop()
        assert cluster.data_dir is not None
        shutil.rmtree(cluster.data_dir, ignore_errors=True)


def test_ready_follows_the_database(tmp_path: Path, own_cluster: PgServer) -> None:
    url = own_cluster.create_database()
    with running_server(tmp_path, db_url=url) as server:
        assert wait_for(server, "/ready", 200)["checks"]["database"]["ok"] is True
        own_cluster.stop()
        down = wait_for(server, "/ready", 503)
        assert down["status"] == "not ready" and down["failing"] == ["database"]
        assert down["checks"]["database"]["detail"]
        assert get(server, "/health")[0] == 200  # alive, only not ready
        assert udp_exchange(server.sip_port, options_request(server.sip_port)) is not None
        own_cluster.start()
        assert wait_for(server, "/ready", 200)["failing"] == []
        assert "readiness: not ready (database: " in server.log()
        assert server.stop() == 0
