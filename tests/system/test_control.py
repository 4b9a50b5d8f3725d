"""The control plane against the real server: scactl drives appearances that handsets see,
/metrics parses and moves, and an exposed RPC listener without a token refuses to start."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.handset import Handset, handsets
from tests.system.server import (
    ROOT,
    SCASERVER,
    RunningServer,
    free_port,
    running_server,
    tool,
    upgrade_database,
)
from tests.system.test_sca import DOMAIN, LINE, config, member, rpc, state_is, subscribed

pytestmark = pytest.mark.system

SCACTL = ROOT / "rpc" / "scactl"


def scactl(server: RunningServer, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCACTL), "-s", f"http://127.0.0.1:{server.http_port}/RPC", *argv],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )


def scrape(server: RunningServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def metrics(server: RunningServer) -> dict[str, float]:
    """Every sample of /metrics, parsed by the Prometheus text parser, by name{labels}."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape(server)):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def reactor_lag_readings(server: RunningServer, within_s: float = 5.0) -> float:
    """How many readings the loop-lag probe has made, polled until there is one (it reads every
    50 ms of the reactor's clock, which a loaded machine may not have given it yet)."""
    deadline = time.monotonic() + within_s
    while True:
        readings = metrics(server)["scaserver_reactor_lag_seconds_count{}"]
        if readings > 0 or time.monotonic() > deadline:
            return readings
        time.sleep(0.1)


def test_scactl_seizes_and_releases_and_the_group_is_notified(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server:
        a, b = member("a", server), member("b", server)
        with handsets(a, b):
            for phone in (a, b):
                assert phone.register().status == 200
                subscribed(phone)
            seized = scactl(server, "-F", "json", "sca.seize_appearance", LINE, a.contact)
            assert seized.returncode == 0, seized.stderr
            for phone in (a, b):
                phone.wait_notify(lambda n: n.event == "call-info" and state_is(1, "seized")(n))
            listed = scactl(server, "--text", "sca.all_appearances")
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.startswith(f"{LINE} 1 seized ")
            released = scactl(server, "sca.release_appearance", LINE, "1")
            assert released.returncode == 0, released.stderr
            for phone in (a, b):
                phone.wait_notify(lambda n: n.event == "call-info" and state_is(1, None)(n) and n.cseq > 2)
            assert rpc(server, "sca.all_appearances") == []
            refused = scactl(server, "sca.release_appearance", LINE, "1")
            assert refused.returncode == 1
            assert refused.stderr.startswith("error: ")


def test_scactl_seizes_a_line_by_its_alias_and_the_group_sees_the_line_seized(tmp_path: Path) -> None:
    alias = f"sip:100@{DOMAIN}"
    extra = f'[[sca.aliases]]\nalias = "{alias}"\nline = "{LINE}"'
    with running_server(tmp_path / "server", config(extra=extra)) as server:
        a, b = member("a", server), member("b", server)
        with handsets(a, b):
            for phone in (a, b):
                assert phone.register().status == 200
                subscribed(phone)
            seized = scactl(server, "-F", "json", "sca.seize_appearance", alias, a.contact)
            assert seized.returncode == 0, seized.stderr
            for phone in (a, b):
                phone.wait_notify(lambda n: n.event == "call-info" and state_is(1, "seized")(n))
            listed = scactl(server, "--text", "sca.all_appearances")
            assert listed.stdout.startswith(f"{LINE} 1 seized "), listed.stdout


def test_metrics_parse_and_move_with_sip_traffic(tmp_path: Path) -> None:
    with running_server(tmp_path / "server", config()) as server:
        before = metrics(server)
        a, b = member("a", server), member("b", server)
        callee = Handset("callee", ("127.0.0.1", server.sip_port), line="sip:callee@example.test")
        with handsets(a, b, callee):
            for phone in (a, b, callee):
                assert phone.register().status == 200
            for phone in (a, b):
                subscribed(phone)
            assert rpc(server, "sca.seize_appearance", LINE, a.contact)["index"] == 1
            b.wait_notify(lambda n: n.event == "call-info" and state_is(1, "seized")(n))
            after = metrics(server)
            text = scrape(server)
            lag_readings = reactor_lag_readings(server)
    assert (
        after["scaserver_registrations_total{outcome=added}"]
        - before.get("scaserver_registrations_total{outcome=added}", 0.0)
        == 3
    )
    assert after["scaserver_sca_subscriptions{event=call-info}"] == 2
    assert after["scaserver_sca_appearances{state=seized}"] == 1
    assert after["scaserver_notify_total{event=call-info,outcome=sent}"] >= 4
    assert after["scaserver_transactions_total{kind=non-invite-server,outcome=2xx}"] >= 5
    assert after["scaserver_registered_contacts{}"] == 3
    assert after["scaserver_parse_errors_total{transport=tls}"] == 0  # created at zero
    assert after["process_cpu_seconds_total{}"] > 0
    assert lag_readings > 0  # the loop-lag probe runs
    assert not [name for name in after if "_created" in name or "_ms" in name]
    # The Prometheus conventions, as the Prometheus tool checks them: silence and 0.
    promtool = [tool("promtool"), "check", "metrics"]
    check = subprocess.run(promtool, input=text, capture_output=True, text=True, check=False, timeout=30)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", ""), text


def test_an_idle_server_collects_its_young_generation_at_a_steady_pace(tmp_path: Path) -> None:
    """The young generation is collected every 100 ms of the reactor's clock, not when
    allocations less deallocations pass a threshold (a count a loaded server keeps near
    zero while its young generation grows): an idle server, which allocates next to
    nothing, still collects it about ten times a second; and the middle generation has its
    turn (every 6th paced collection), which an explicit young collection never gives it.
    Scraped every 0.5 s: a scrape's own allocations are a few thousand objects, far from the
    50 000 that start an automatic collection."""
    young = "scaserver_gc_pause_seconds_count{generation=0}"
    middle = "scaserver_gc_pause_seconds_count{generation=1}"
    with running_server(tmp_path / "server", config()) as server:
        first = metrics(server)
        deadline = time.monotonic() + 15.0
        while True:
            time.sleep(0.5)
            now = metrics(server)
            collected = now[young] - first[young], now[middle] - first[middle]
            if (collected[0] >= 10 and collected[1] >= 1) or time.monotonic() > deadline:
                break
    assert collected[0] >= 10
    assert collected[1] >= 1


def test_a_non_loopback_rpc_listener_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade_database(db_url)
    config_path = tmp_path / "exposed.toml"
    config_path.write_text('[provisioning]\nbase_url = "http://192.0.2.1:8080/prov"\n')
    argv = ["run", "--config", str(config_path), "--sip", f"127.0.0.1:{free_port()}", "--http", "0.0.0.0:0"]
    result = subprocess.run(
        [*SCASERVER, *argv, "--db", db_url],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "token" in result.stderr.lower()


def test_a_wildcard_http_listener_without_a_provisioning_url_refuses_to_start(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade_database(db_url)
    argv = ["run", "--sip", f"127.0.0.1:{free_port()}", "--http", "0.0.0.0:0", "--db", db_url]
    result = subprocess.run(
        [*SCASERVER, *argv], capture_output=True, check=False, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 2
    assert result.stderr == (
        "command line: provisioning.base_url: required when [http] listens on the wildcard address 0.0.0.0: "
        "phones must be told a URL they can reach (or set provisioning.enabled = false)\n"
    )


def test_prov_resync_sends_check_sync_to_the_device_line(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'prov.db'}"
    upgrade_database(db_url)
    aor = "sip:2002@example.test"
    for argv in (
        ("device", "identity", aor, "--auth-user", "2002", "--password", "secret"),
        ("device", "add", "0004f2aabbcc", "--family", "polycom-ucs", "--model", "VVX411", "--line", aor),
    ):
        done = subprocess.run(
            [*SCASERVER, *argv, "--db", db_url], capture_output=True, text=True, check=False, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
    with running_server(tmp_path / "server", config(), db_url=db_url) as server:
        phone = Handset("vvx", ("127.0.0.1", server.sip_port), line=aor)
        with handsets(phone):
            assert phone.register().status == 200
            resync = scactl(server, "-F", "json", "prov.resync", "00:04:F2:AA:BB:CC")
            assert resync.returncode == 0, resync.stderr
            phone.wait_notify(lambda n: n.event == "check-sync")
            assert f'"contact": "{phone.contact}"' in resync.stdout and '"status": 200' in resync.stdout
        unknown = scactl(server, "prov.resync", "0004f2000000")
        assert unknown.returncode == 1 and "Device not found" in unknown.stderr
