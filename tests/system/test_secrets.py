"""Secrets stay secret (push-and-parking.md section 9, reporting.md section 3 rule 4): the
real server process, a digest-authenticated push registration (RFC 8599 ``pn-*`` Contact
parameters), a push through a gateway with a bearer token, RPC calls with a right and a wrong
bearer token, all at debug log level.  Afterwards neither the whole server log nor any table
of the database holds the push token, the digest response, the password or a bearer token;
the one exception is the ``location`` table, the registrar's own state, which must keep the
token to push the device after a restart.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import String, Text, select

from scaserver.store import tables
from scaserver.store.sql import SqlStore
from tests.system.accounts import DOMAIN, add_subscribers
from tests.system.handset import Handset, new_tag
from tests.system.server import RunningServer, running_server

pytestmark = pytest.mark.system

EXTENSION = "200"
AOR = f"sip:{EXTENSION}@{DOMAIN}"
PASSWORD = "pw-Tr0ub4dor-secret"
TOKEN = "f00dbabe0123456789abcdef0123456789abcdef0123456789abcdefcafe"
PN = f"pn-provider=apns;pn-prid={TOKEN};pn-param=ABCDE12345.com.acme.phone.voip"
GATEWAY_BEARER = "gw-bearer-7c1d5e0f9a"
RPC_BEARER = "rpc-admin-bearer-51ab9e"
WRONG_BEARER = "rpc-wrong-bearer-0d3c"


class Gateway:
    """A push gateway that records each POST and answers 202."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, object]] = []
        self.authorization: list[str] = []
        self.pushed = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                gateway.pushes.append(json.loads(self.rfile.read(length)))
                gateway.authorization.append(self.headers.get("Authorization", ""))
                answer = b'{"status":"sent"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                gateway.pushed.set()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    made = Gateway()
    try:
        yield made
    finally:
        made.close()


def rpc(server: RunningServer, token: str, method: str, *params: object) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/RPC",
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def every_text(db_url: str) -> dict[str, list[str]]:
    """Every text value of every table of the database, by table."""
    found: dict[str, list[str]] = {}
    store = SqlStore(db_url)
    try:
        with store.engine.connect() as conn:
            for table in tables.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, (String, Text))]
                for row in conn.execute(select(*columns)) if columns else ():
                    found.setdefault(table.name, []).extend(str(v) for v in row if v is not None)
    finally:
        store.close()
    return found


def test_no_token_response_password_or_bearer_in_the_log_or_the_database(
    tmp_path: Path, db_url: str, gateway: Gateway
) -> None:
    add_subscribers(db_url, [(EXTENSION, PASSWORD)])
    token_file = tmp_path / "rpc-admin.token"
    token_file.write_text(RPC_BEARER + "\n")
    config = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.3
[rpc]
admin_token_file = "{token_file}"
[push]
enabled = true
gateway_url = "http://127.0.0.1:{gateway.port}/push"
gateway_token = "{GATEWAY_BEARER}"
"""
    with running_server(
        tmp_path / "server", config, db_url=db_url, extra_args=("--log-level", "debug")
    ) as server:
        mobile = Handset(
            "mobile", ("127.0.0.1", server.sip_port), line=AOR, username=EXTENSION, password=PASSWORD
        )
        try:
            mobile.contact = f"sip:{EXTENSION}@127.0.0.1:{mobile.port};{PN}"
            request = mobile.build(
                "REGISTER",
                f"sip:{DOMAIN}",
                from_=f"<{AOR}>;tag={new_tag()}",
                to=f"<{AOR}>",
                call_id="reg-mobile-1",
                cseq=1,
                extra=(("Expires", "600"),),
            )
            ok, sent = mobile.send_authenticated(request)
            assert ok.status == 200, ok
            authorization = sent.headers.get("Authorization") or ""
            found = re.search(r'response="([0-9a-f]+)"', authorization)
            assert found is not None, authorization
            digest_response = found.group(1)

            status, _ = rpc(server, WRONG_BEARER, "ul.dump")
            assert status == 401
            status, body = rpc(server, RPC_BEARER, "ul.dump")
            assert status == 200, body
            status, body = rpc(server, RPC_BEARER, "pushreg.wake", AOR)
            assert status == 200, body
            assert gateway.pushed.wait(10), "the gateway got no push"
            assert gateway.authorization[0] == f"Bearer {GATEWAY_BEARER}"
            assert TOKEN in json.dumps(gateway.pushes[0])  # the gateway, and only it, gets the token
            deadline = time.monotonic() + 10
            while "push_wakeups" not in every_text(db_url) or "registration_events" not in every_text(db_url):
                assert time.monotonic() < deadline, "history rows not written"
                time.sleep(0.3)
        finally:
            mobile.close()
        assert server.stop(signal.SIGTERM, timeout=10.0) == 0, server.log()[-3000:]

    log = server.log()
    assert "binding added" in log  # the lines that used to show the token are there, masked
    secrets = {
        "push token": TOKEN,
        "digest response": digest_response,
        "password": PASSWORD,
        "gateway bearer token": GATEWAY_BEARER,
        "RPC bearer token": RPC_BEARER,
        "wrong RPC bearer token": WRONG_BEARER,
    }
    for what, secret in secrets.items():
        assert secret not in log, (
            f"{what} in the log: {[line for line in log.splitlines() if secret in line]}"
        )
    texts = every_text(db_url)
    assert TOKEN in " ".join(texts["location"])  # the registrar's state keeps what it must push to
    for table, values in texts.items():
        for what, secret in secrets.items():
            if table == "location" and secret == TOKEN:
                continue
            assert not any(secret in value for value in values), f"{what} in table {table}"
