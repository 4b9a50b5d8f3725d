"""``scaserver device ...`` and ``scaserver provision render`` against SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import io
import xml.etree.ElementTree as ET

from scaserver.provisioning import commands
from scaserver.provisioning.profile import SiteSettings

SITE = SiteSettings(sip_host="pbx.example.com", prov_base_url="https://prov.example.com")


def cli(url: str, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="scaserver")
    commands.add_subparsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args([*argv, "--db", url])
    out, err = io.StringIO(), io.StringIO()
    code = commands.run(args, site=SITE, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_device_lifecycle_and_render(migrated_db_url: str) -> None:
    url = migrated_db_url
    code, _, err = cli(
        url,
        "device",
        "add",
        "00:04:F2:A1:B2:C3",
        "--family",
        "polycom-ucs",
        "--line",
        "sip:2001@pbx.example.com",
    )
    assert (code, err) == (
        2,
        "scaserver device: no registration identity for sip:2001@pbx.example.com: "
        "add it with `scaserver device identity`\n",
    )
    assert (
        cli(
            url,
            "device",
            "identity",
            "2001@pbx.example.com",
            "--auth-user",
            "2001",
            "--password",
            "Xy7&kq2",
            "--display-name",
            "Front Desk",
        )[0]
        == 0
    )
    code, out, _ = cli(
        url,
        "device",
        "add",
        "00:04:F2:A1:B2:C3",
        "--family",
        "polycom-ucs",
        "--model",
        "VVX411",
        "--prov-user",
        "vvx",
        "--prov-password",
        "pw",
        "--line",
        "sip:2001@pbx.example.com,keys=2,label=Desk",
    )
    assert (code, out) == (0, "device 0004f2a1b2c3 saved\n")
    assert cli(url, "device", "add", "0004f2a1b2c3", "--family", "polycom-ucs")[0] == 2  # exists

    code, out, _ = cli(url, "device", "list")
    assert out == "0004f2a1b2c3 polycom-ucs VVX411 sip:2001@pbx.example.com\n"
    code, out, _ = cli(url, "device", "show", "0004.f2a1.b2c3")
    assert "http auth:    vvx (realm scaserver-provisioning)" in out
    assert "line 1:       sip:2001@pbx.example.com (private) as 2001, keys 1..2 x 1 calls, label Desk" in out
    assert "Xy7" not in out

    code, out, _ = cli(url, "provision", "render", "0004f2a1b2c3")
    reg = ET.fromstring(out).find("reg")
    assert code == 0 and reg is not None
    assert reg.attrib["reg.1.auth.password"] == "Xy7&kq2"
    code, out, _ = cli(url, "provision", "render", "0004f2a1b2c3", "--file", "0004f2a1b2c3.cfg")
    assert ET.fromstring(out).attrib["CONFIG_FILES"] == "0004f2a1b2c3-sca.cfg"
    assert cli(url, "provision", "render", "0004f2a1b2c3", "--file", "x.cfg")[0] == 2

    assert cli(url, "device", "rm", "0004f2a1b2c3") == (0, "device 0004f2a1b2c3 removed\n", "")
    assert cli(url, "device", "rm", "0004f2a1b2c3")[0] == 2
    assert cli(url, "provision", "render", "0004f2a1b2c3")[0] == 2


def test_bad_arguments_are_usage_errors(migrated_db_url: str) -> None:
    url = migrated_db_url
    assert cli(url, "device", "show", "not-a-mac")[0] == 2
    assert cli(url, "device", "add", "000000000000", "--family", "cisco-mpp")[0] == 2
    assert cli(url, "device", "add", "5006ab123456", "--family", "cisco-mpp", "--prov-user", "u")[0] == 2
    assert (
        cli(url, "device", "add", "5006ab123456", "--family", "cisco-mpp", "--override", "bad name=1")[0] == 2
    )
    cli(url, "device", "identity", "sip:2001@pbx.example.com", "--auth-user", "2001", "--password", "p")
    code, _, err = cli(
        url,
        "device",
        "add",
        "5006ab123456",
        "--family",
        "cisco-mpp",
        "--model",
        "CP-8841-3PCC",
        "--line",
        "sip:2001@pbx.example.com,position=6,keys=1",
    )
    assert code == 2 and "outside 1..5" in err
    assert (
        cli(
            url,
            "device",
            "add",
            "5006ab123456",
            "--family",
            "cisco-mpp",
            "--line",
            "sip:2001@pbx.example.com,colour=red",
        )[0]
        == 2
    )


def test_database_failure_is_exit_1(sqlite_url: str) -> None:
    assert cli(sqlite_url, "device", "list")[0] == 1  # no schema
