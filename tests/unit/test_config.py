"""Configuration: defaults, the demo file, one-line errors with exit status 2, command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaserver import __version__
from scaserver.cli import main
from scaserver.config.errors import ConfigError
from scaserver.config.listen import system_interfaces
from scaserver.config.load import load_settings, settings_from_mapping, with_overrides
from scaserver.config.schema import LogLevelName, Settings
from scaserver.edge.endpoint import Endpoint
from scaserver.registrar.midregsettings import Mode
from scaserver.sip.message import Transport
from scaserver.sip.sessiontimer import SessionIntervals
from scaserver.sip.timers import TimerConfig

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.toml"


def no_interfaces(name: str) -> tuple[str, ...] | None:
    return None


def fake_interfaces(name: str) -> tuple[str, ...] | None:
    return {"sip0": ("192.0.2.1", "2001:db8::1"), "down0": ()}.get(name)


def test_defaults_listen_on_loopback() -> None:
    settings = load_settings(None)
    assert settings.server.listen == (Endpoint("127.0.0.1", 5060),)
    assert settings.http.listen == Endpoint("127.0.0.1", 8080)
    assert settings.database.url == "sqlite:///var/scaserver.db"
    assert settings.database.flush_interval == 1.0
    assert settings.sip.max_message_size == 65535
    assert settings.sip.tcp_idle_timeout == 600.0
    assert settings.sip.tcp_slow_sender_timeout == 10.0
    assert settings.sca.line_seize_max_expires == 15
    assert settings.sca.call_info_ok_code == 202
    assert settings.server.advertised() == ("127.0.0.1", 5060)
    assert settings == Settings()


def test_demo_file_has_two_shared_lines() -> None:
    settings = load_settings(DEMO)
    assert [(line.aor, line.appearances) for line in settings.sca.lines] == [
        ("sip:2001@demo.scaserver.test", 4),
        ("sip:2002@demo.scaserver.test", 2),
    ]
    assert settings.sca.lines[0].members[0] == "sip:2001a@demo.scaserver.test"
    assert [(entry.alias, entry.line) for entry in settings.sca.aliases] == [
        ("sip:100@demo.scaserver.test", "sip:2001@demo.scaserver.test")
    ]
    assert settings.server.domains == ("demo.scaserver.test",)
    assert all(ep.host in ("127.0.0.1", "::1") for ep in settings.server.listen)


def test_listen_entries_ipv6_interfaces_and_default_port() -> None:
    settings = settings_from_mapping(
        {"server": {"listen": ["[::1]:5070", "sip0:5080", "192.0.2.9"]}}, "f.toml", interfaces=fake_interfaces
    )
    assert settings.server.listen == (
        Endpoint("::1", 5070),
        Endpoint("192.0.2.1", 5080),
        Endpoint("2001:db8::1", 5080),
        Endpoint("192.0.2.9", 5060),
    )
    assert str(settings.server.listen[0]) == "[::1]:5070"


def test_advertised_address_overrides_the_listen_address() -> None:
    settings = settings_from_mapping(
        {
            "server": {
                "listen": ["0.0.0.0:5060"],
                "advertised_host": "sip.example.com",
                "advertised_port": 5080,
            }
        },
        "f.toml",
    )
    assert settings.server.advertised() == ("sip.example.com", 5080)


def test_enums_are_case_insensitive_and_numbers_widen_to_float() -> None:
    settings = settings_from_mapping(
        {"upstream": {"host": "192.0.2.1", "transport": "TCP"}, "log": {"level": "debug"}, "sip": {"t1": 1}},
        "f",
    )
    assert settings.upstream.transport is Transport.TCP
    assert settings.log.level is LogLevelName.DEBUG
    assert settings.sip.timers.t1 == 1.0


def test_loopback_interface_resolves_through_netlink() -> None:
    addresses = system_interfaces("lo")
    assert addresses is not None
    assert "127.0.0.1" in addresses
    assert system_interfaces("nosuchif0") is None


ERRORS = [
    (
        '[[sca.lines]]\naor = "sip:2001@demo.scaserver.test"\nappearances = "x"\n',
        'sca.lines[0].appearances: expected an integer, got "x"',
    ),
    ("[sip]\ntcp_idel_timeout = 5\n", "sip.tcp_idel_timeout: unknown key"),
    ("colour = 1\n", "colour: unknown key"),
    ('[sca]\ncontact = "sip:sca@192.0.2.1"\n', "sca.contact: unknown key"),  # derived, not written
    (
        "[sca]\nmax_subscriptions_per_identity = -1\n",
        "sca.max_subscriptions_per_identity: must not be negative (0 = no cap)",
    ),
    ("[sca]\n[[sca.lines]]\nappearances = 2\n", "sca.lines[0].aor: required key missing"),
    (
        '[server]\nlisten = ["nosuchif0:5060"]\n',
        'server.listen[0]: "nosuchif0:5060": not an IP address or a network interface',
    ),
    (
        '[server]\nlisten = ["down0:5060"]\n',
        'server.listen[0]: "down0:5060": interface down0 has no usable address',
    ),
    (
        '[server]\nlisten = ["::1:5060"]\n',
        'server.listen[0]: "::1:5060": write IPv6 addresses in brackets, as [::1]:5060',
    ),
    (
        '[server]\nlisten = ["127.0.0.1:70000"]\n',
        'server.listen[0]: "127.0.0.1:70000": port must be a number from 0 to 65535',
    ),
    ('[server]\nlisten = ["[::1:5060"]\n', 'server.listen[0]: "[::1:5060": unterminated IPv6 bracket'),
    (
        '[server]\nlisten = "127.0.0.1:5060"\n',
        'server.listen: expected a list of "HOST:PORT" strings, got "127.0.0.1:5060"',
    ),
    ("[server]\nlisten = []\n", "server.listen: at least one address is needed"),
    (
        '[server]\nlisten = ["0.0.0.0:5060"]\n',
        "server.advertised_host: required when listening on the wildcard address 0.0.0.0",
    ),
    (
        '[http]\nlisten = "[::]:8080"\n',
        "provisioning.base_url: required when [http] listens on the wildcard address ::: phones must be "
        "told a URL they can reach (or set provisioning.enabled = false)",
    ),
    ("[sip]\ntrace = 1\n", "sip.trace: expected true or false, got 1"),
    ("[sip]\nt1 = true\n", "sip.t1: expected a number, got true"),
    ('[rpc]\nallow_from = ["ten"]\n', 'rpc.allow_from[0]: "ten": expected an address or CIDR'),
    (
        '[rpc]\nallowed_origins = "https://ops.example.com"\n',
        'rpc.allowed_origins: expected a list, got "https://ops.example.com"',
    ),
    ('[rpc]\ntoken = "x"\n', "rpc.token: unknown key"),
    ("[reporting]\nretention_days = 0\n", "reporting.retention_days: must be at least 1"),
    ('[reporting]\nsample_interval = "1m"\n', 'reporting.sample_interval: expected a number, got "1m"'),
    ('[provisioning]\nupload_keep = "5"\n', 'provisioning.upload_keep: expected an integer, got "5"'),
    (
        '[provisioning]\nsip_transport = "sctp"\n',
        'provisioning.sip_transport: expected "udp", "tcp" or "tls", got "sctp"',
    ),
    (
        '[provisioning]\nallow_from = ["10.0.0.0/33"]\n',
        'provisioning.allow_from[0]: "10.0.0.0/33": expected an address or CIDR',
    ),
    (
        '[provisioning]\npath_prefix = "/"\n',
        "provisioning.path_prefix: must name at least one path segment (the root is the RPC tree)",
    ),
    ("[provisioning]\nupload_max_bytes = 0\n", "provisioning.upload_max_bytes: must be positive"),
    ("[sca]\nearly_ttl = 0\n", "sca.early_ttl: must be positive"),
    ('[sca]\nalerting_state = "yes"\n', 'sca.alerting_state: expected true or false, got "yes"'),
    ('[sip]\nt4 = "5"\n', 'sip.t4: expected a number, got "5"'),
    ("[sip]\ntrying_delay = 1\n", "sip.trying_delay: unknown key"),  # the timer's own, not the file's
    ("[sip]\ntimers = {}\n", "sip.timers: unknown key"),
    ("[sip]\nt2 = 8\ntrace = 1\n", "sip.trace: expected true or false, got 1"),
    ("[sip]\nt1 = 0\n", "sip.t1: must be positive"),
    ("[sip]\nmax_message_size = 10\n", "sip.max_message_size: must be from 1024 to 16777216"),
    ('[server]\ndomains = "demo"\n', 'server.domains: expected a list, got "demo"'),
    ("[server]\ndomains = [1]\n", "server.domains[0]: expected a string, got 1"),
    ("server = 3\n", "server: expected a table, got 3"),
    (
        '[http]\nlisten = "localhost:8080"\n',
        'http.listen: "localhost:8080": not an IP address or a network interface',
    ),
    (
        '[database]\nurl = "mysql://x"\n',
        'database.url: "mysql://x": expected a sqlite:// or postgresql:// URL',
    ),
    (
        '[auth]\nalgorithms = ["SHA-1"]\n',
        'auth.algorithms: "SHA-1": expected one of SHA-256, SHA-512-256, MD5',
    ),
    ("[registrar]\nmin_expires = 7200\n", "registrar.max_expires: must not be below min_expires"),
    (
        "[registrar]\ndefault_expires = 10\n",
        "registrar.default_expires: must be between min_expires and max_expires",
    ),
    ("[sca]\ncall_info_ok_code = 204\n", "sca.call_info_ok_code: must be 200 or 202"),
    ("[sca]\nmin_se = 60\n", "sca.min_se: must be at least 90 (RFC 4028 section 4)"),
    ("[sca]\nmin_se = 3600\n", "sca.session_expires: must not be below sca.min_se"),
    ("[sca]\nsession_timers = 1\n", "sca.session_timers: expected true or false, got 1"),
    # session_expires and min_se are structured into the sca's SessionIntervals, reported as keys of [sca]
    ('[sca]\nsession_expires = "x"\n', 'sca.session_expires: expected an integer, got "x"'),
    ("[sca]\nmin_se = true\n", "sca.min_se: expected an integer, got true"),
    ("[sca]\nsession_expire = 1800\n", "sca.session_expire: unknown key"),
    ('[sca]\nmin_se = "90"\nseized_ttl = "y"\n', 'sca.seized_ttl: expected a number, got "y"'),
    ('[sca]\nmin_se = "x"\nsession_timers = 3\n', "sca.session_timers: expected true or false, got 3"),
    ('[sca]\nbogus = 1\nmin_se = "x"\n', 'sca.min_se: expected an integer, got "x"'),
    (
        '[sca]\ncall_info_uri = "host"\n',
        'sca.call_info_uri: expected "domain", "aor" or a sip: URI, got "host"',
    ),
    ('[sca]\nserver_address = "10.0.0.1"\n', 'sca.server_address: expected a sip: URI, got "10.0.0.1"'),
    (
        '[[sca.lines]]\naor = "sip:demo.scaserver.test"\n',
        'sca.lines[0].aor: expected a sip:user@host address of record, got "sip:demo.scaserver.test"',
    ),
    (
        '[[sca.lines]]\naor = "sip:1@a.test"\n[[sca.lines]]\naor = "sip:1@A.test"\n',
        'sca.lines[1].aor: "sip:1@A.test" is listed twice',
    ),
    (
        '[[sca.lines]]\naor = "sip:1@a.test"\nappearances = 0\n',
        "sca.lines[0].appearances: must be at least 1",
    ),
    (
        '[[sca.lines]]\naor = "sip:1@a.test"\nmembers = ["phone"]\n',
        'sca.lines[0].members[0]: expected a sip: URI, got "phone"',
    ),
    (
        '[[sca.aliases]]\nalias = "100"\nline = "sip:2001@a.test"\n',
        'sca.aliases[0].alias: expected a sip:user@host address of record, got "100"',
    ),
    (
        '[[sca.aliases]]\nalias = "sip:100@a.test"\nline = "tel:+1555"\n',
        'sca.aliases[0].line: expected a sip:user@host address of record, got "tel:+1555"',
    ),
    (
        '[[sca.aliases]]\nalias = "sip:100@A.test:5060"\nline = "sip:100@a.test"\n',
        'sca.aliases[0].line: "sip:100@a.test" is the alias itself',
    ),
    (
        '[[sca.aliases]]\nalias = "sip:100@a.test"\nline = "sip:2001@a.test"\n'
        '[[sca.aliases]]\nalias = "sip:200@a.test"\nline = "sip:100@a.test"\n',
        'sca.aliases[1].line: "sip:100@a.test" is an alias, not a line',
    ),
    (
        '[[sca.lines]]\naor = "sip:2002@a.test"\n'
        '[[sca.aliases]]\nalias = "sip:2002@a.test"\nline = "sip:2001@a.test"\n',
        'sca.aliases[0].alias: "sip:2002@a.test" is a line of sca.lines',
    ),
    (
        '[[sca.aliases]]\nalias = "sip:100@a.test"\nline = "sip:2001@a.test"\n'
        '[[sca.aliases]]\nalias = "sip:100@A.TEST"\nline = "sip:2002@a.test"\n',
        'sca.aliases[1].alias: "sip:100@A.TEST" is listed twice',
    ),
    ('[[sca.aliases]]\nalias = "sip:100@a.test"\n', "sca.aliases[0].line: required key missing"),
    ('[upstream]\ntransport = "sctp"\n', 'upstream.transport: expected "udp" or "tcp" or "tls", got "sctp"'),
    ("[upstream]\nport = 70000\n", "upstream.port: must be from 0 (SRV decides) to 65535"),
    ("[upstream]\nport = -1\n", "upstream.port: must be from 0 (SRV decides) to 65535"),
    (
        '[dns]\nservers = ["dns.example.com"]\n',
        'dns.servers[0]: "dns.example.com": expected an IP address, "HOST:PORT" or "[V6]:PORT"',
    ),
    (
        '[dns]\nservers = ["127.0.0.1:0"]\n',
        'dns.servers[0]: "127.0.0.1:0": expected an IP address, "HOST:PORT" or "[V6]:PORT"',
    ),
    ('[dns]\nservers = "127.0.0.1"\n', 'dns.servers: expected a list, got "127.0.0.1"'),
    ("[dns]\ntimeout = 0\n", "dns.timeout: must be positive"),
    ("[dns]\nmax_ttl = 1\nmin_ttl = 5\n", "dns.max_ttl: must not be below dns.min_ttl"),
    ("[dns]\nnegative_ttl = -1\n", "dns.negative_ttl: must not be negative"),
    ("[dns]\ncache_size = 0\n", "dns.cache_size: must be at least 1"),
    ("[dns]\nmax_records = 0\n", "dns.max_records: must be from 1 to 1000"),
    ("[dns]\nmax_cname_depth = 99\n", "dns.max_cname_depth: must be from 0 to 32"),
    ("[dns]\nfailed_target_hold = -5\n", "dns.failed_target_hold: must not be negative"),
    ("[dns]\nretries = 3\n", "dns.retries: unknown key"),
    (
        '[log]\nlevel = "loud"\n',
        'log.level: expected "debug" or "info" or "warn" or "error" or "critical", got "loud"',
    ),
    ("[sip\n", "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 5)"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_each_config_error_is_one_line_and_exit_status_2(
    text: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(load_settings, "__kwdefaults__", {"interfaces": fake_interfaces})
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"{path}: {expected}\n"
    assert captured.out == ""


def test_a_wildcard_http_listener_is_accepted_with_a_base_url_or_without_provisioning() -> None:
    with_url = {
        "http": {"listen": "0.0.0.0:8080"},
        "provisioning": {"base_url": "https://prov.example.com/prov"},
    }
    assert settings_from_mapping(with_url, "t").http.listen == Endpoint("0.0.0.0", 8080)
    without = {"http": {"listen": "0.0.0.0:8080"}, "provisioning": {"enabled": False}}
    assert not settings_from_mapping(without, "t").provisioning.enabled


def test_profiles_with_passwords_require_credentials_by_default() -> None:
    assert load_settings(None).provisioning.require_credentials
    off = settings_from_mapping({"provisioning": {"require_credentials": False}}, "t")
    assert not off.provisioning.require_credentials


def test_config_error_carries_the_parts() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"sip": {"t2": "x"}}, "conf.toml")
    assert (caught.value.source, caught.value.key, caught.value.detail) == (
        "conf.toml",
        "sip.t2",
        'expected a number, got "x"',
    )


def test_missing_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: cannot read: No such file or directory\n"


def test_non_utf8_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nuser_agent = "caf\xe9"\n')
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: not UTF-8 text\n"


def test_check_config_accepts_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEMO)]) == 0
    assert capsys.readouterr().out == f"{DEMO}: OK\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"scaserver {__version__}\n"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: scaserver")


def test_overrides_replace_the_file_values() -> None:
    settings = with_overrides(
        load_settings(DEMO),
        sip=["[::1]:5070", "127.0.0.1:5071"],
        http="127.0.0.1:9090",
        db="sqlite:////tmp/x.db",
        log_json=True,
        log_level="debug",
        trace=True,
        interfaces=no_interfaces,
    )
    assert settings.server.listen == (Endpoint("::1", 5070), Endpoint("127.0.0.1", 5071))
    assert settings.http.listen == Endpoint("127.0.0.1", 9090)
    assert settings.database.url == "sqlite:////tmp/x.db"
    assert settings.log.json and settings.log.level is LogLevelName.DEBUG
    assert settings.sip.trace


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["run", "--sip", "nosuchif0:5060"],
            'command line: --sip: "nosuchif0:5060": not an IP address or a network interface',
        ),
        (
            ["run", "--http", "127.0.0.1:x"],
            'command line: --http: "127.0.0.1:x": port must be a number from 0 to 65535',
        ),
        (
            ["run", "--db", "oracle://x"],
            'command line: database.url: "oracle://x": expected a sqlite:// or postgresql:// URL',
        ),
        (
            ["run", "--sip", "0.0.0.0:5060"],
            "command line: server.advertised_host: required when listening on the wildcard address 0.0.0.0",
        ),
        (
            ["run", "--http", "0.0.0.0:8080"],
            "command line: provisioning.base_url: required when [http] listens on the wildcard address "
            "0.0.0.0: phones must be told a URL they can reach (or set provisioning.enabled = false)",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_status_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == expected + "\n"


def test_run_with_a_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sip]\nt1 = "fast"\n')
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f'{path}: sip.t1: expected a number, got "fast"\n'


def test_db_upgrade_then_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/scaserver.db"
    assert main(["db", "upgrade", "--db", url]) == 0
    assert capsys.readouterr().out.startswith("database at revision ")
    assert main(["db", "current", "--db", url]) == 0
    assert capsys.readouterr().out.endswith("(up to date)\n")


def test_db_current_of_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--db", f"sqlite:///{tmp_path}/empty.db"]) == 0
    assert capsys.readouterr().out.startswith("empty (needs upgrade to ")


def test_db_failure_is_one_line_and_exit_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["db", "upgrade", "--db", f"sqlite:///{blocker}/x.db"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scaserver db upgrade: ")
    assert err.count("\n") == 1


# [midregistrar] upstream_auth and [[midregistrar.credentials]] (push-and-parking.md 3.1) ----------

STATIC = (
    '[midregistrar]\nupstream_auth = "static"\n[[midregistrar.credentials]]\naor = "sip:200@example.com"\n'
)
MD5_HA1 = "0123456789abcdef" * 2

UPSTREAM_AUTH_ERRORS = [
    (
        '[midregistrar]\nupstream_auth = "digest"\n',
        'midregistrar.upstream_auth: expected "none", "subscriber" or "static", got "digest"',
    ),
    (
        '[midregistrar]\nupstream_auth = "subscriber"\n[[midregistrar.credentials]]\naor = "sip:2@a.test"\n'
        'password = "p"\n',
        'midregistrar.credentials: used only with upstream_auth = "static"',
    ),
    (
        '[midregistrar]\nupstream_auth = "static"\n[[midregistrar.credentials]]\npassword = "p"\n',
        "midregistrar.credentials[0].aor: required key missing",
    ),
    (
        '[midregistrar]\nupstream_auth = "static"\n[[midregistrar.credentials]]\naor = "sip:a.test"\n'
        'password = "p"\n',
        'midregistrar.credentials[0].aor: expected a sip:user@host address of record, got "sip:a.test"',
    ),
    (STATIC, "midregistrar.credentials[0].password: password or ha1 is required"),
    (
        STATIC + f'password = "p"\nrealm = "r"\nha1 = "{MD5_HA1}"\n',
        "midregistrar.credentials[0].ha1: give password or ha1, not both",
    ),
    (
        STATIC + 'ha1 = "abc"\nrealm = "r"\n',
        "midregistrar.credentials[0].ha1: expected 32 hexadecimal digits (the MD5 HA1)",
    ),
    (
        STATIC + f'ha1 = "{MD5_HA1}"\nrealm = "r"\nha1_algorithm = "SHA-256"\n',
        "midregistrar.credentials[0].ha1: expected 64 hexadecimal digits (the SHA-256 HA1)",
    ),
    (
        STATIC + f'ha1 = "{"x" * 32}"\nrealm = "r"\n',
        "midregistrar.credentials[0].ha1: expected 32 hexadecimal digits (the MD5 HA1)",
    ),
    (
        STATIC + f'ha1 = "{MD5_HA1}"\n',
        "midregistrar.credentials[0].realm: required with ha1 (an HA1 covers one realm)",
    ),
    (
        STATIC + 'password = "p"\nha1_algorithm = "SHA-1"\n',
        'midregistrar.credentials[0].ha1_algorithm: "SHA-1": expected one of SHA-256, SHA-512-256, MD5',
    ),
    (
        STATIC
        + 'password = "p"\n[[midregistrar.credentials]]\naor = "sip:200@EXAMPLE.com"\npassword = "q"\n',
        'midregistrar.credentials[1].aor: "sip:200@EXAMPLE.com" is listed twice for realm ""',
    ),
    (STATIC + 'password = "p"\npasword = "q"\n', "midregistrar.credentials[0].pasword: unknown key"),
]


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_AUTH_ERRORS)
def test_upstream_auth_errors_name_their_key(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, interfaces=no_interfaces)
    assert str(caught.value) == f"{path}: {expected}"


MODE_ERRORS = [
    ('mode = "bogus"', 'midregistrar.mode: expected "aor" or "mirror", got "bogus"'),
    ('mode = "AOR"', 'midregistrar.mode: expected "aor" or "mirror", got "AOR"'),
    ('mode = ""', 'midregistrar.mode: expected "aor" or "mirror", got ""'),
    ("mode = 3", "midregistrar.mode: expected a string, got 3"),
    ("mode = true", "midregistrar.mode: expected a string, got true"),
]


@pytest.mark.parametrize(("line", "expected"), MODE_ERRORS)
def test_midregistrar_mode_is_written_exactly(line: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(f"[midregistrar]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, interfaces=no_interfaces)
    assert str(caught.value) == f"{path}: {expected}"


def test_midregistrar_mode_is_structured_into_the_enum(tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text('[midregistrar]\nmode = "mirror"\n')
    assert load_settings(path, interfaces=no_interfaces).midregistrar.mode is Mode.MIRROR
    assert load_settings(None).midregistrar.mode is Mode.AOR


def test_upstream_auth_defaults_to_none_without_credentials() -> None:
    mid = load_settings(None).midregistrar
    assert (mid.upstream_auth, mid.credentials) == ("none", ())


def test_static_credentials_are_read_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(
        STATIC
        + 'password = "hunter2-secret"\n'
        + '[[midregistrar.credentials]]\naor = "sip:200@example.com"\nusername = "ext200"\n'
        + f'realm = "pbx.example.com"\nha1 = "{MD5_HA1.upper()}"\n'
    )
    mid = load_settings(path, interfaces=no_interfaces).midregistrar
    first, second = mid.credentials
    assert (first.aor, first.username, first.realm, first.password) == (
        "sip:200@example.com",
        "",
        "",
        "hunter2-secret",
    )
    assert (second.username, second.realm, second.ha1, second.ha1_algorithm) == (
        "ext200",
        "pbx.example.com",
        MD5_HA1.upper(),
        "MD5",
    )
    assert "hunter2" not in repr(mid) and MD5_HA1.upper() not in repr(mid)


def test_a_password_of_the_wrong_type_is_not_quoted_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "mid.toml"
    path.write_text(STATIC + "password = 987654321\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, interfaces=no_interfaces)
    assert caught.value.key == "midregistrar.credentials[0].password"
    assert "987654321" not in str(caught.value)


def test_security_defaults_and_overrides() -> None:
    default = settings_from_mapping({}, "conf.toml").security
    assert (default.enabled, default.rate, default.burst, default.auth_failures) == (True, 20.0, 60.0, 5)
    assert (default.max_connections_per_address, default.max_connections) == (32, 2000)
    settings = settings_from_mapping(
        {"security": {"rate": 5, "allow": ["192.0.2.0/24"], "max_transactions": 100}}, "conf.toml"
    )
    assert (settings.security.rate, settings.security.allow) == (5.0, ("192.0.2.0/24",))
    assert settings.security.max_transactions == 100


@pytest.mark.parametrize(
    ("section", "key", "detail"),
    [
        ({"allow": ["not-a-net"]}, "security.allow[0]", "expected an address or CIDR"),
        ({"rate": 0}, "security.rate", "must be positive"),
        ({"max_ban_s": 1.0}, "security.max_ban_s", "must not be below ban_s"),
        ({"bans": 3}, "security", "bans"),
    ],
)
def test_unusable_security_settings_are_refused(section: dict[str, object], key: str, detail: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"security": section}, "conf.toml")
    assert raised.value.key.startswith(key) and detail in str(raised.value)


def test_session_timers_are_on_by_default_with_rfc_4028_values() -> None:
    sca = load_settings(None).sca
    assert sca.session_timers and sca.session_intervals == SessionIntervals(session_expires=1800, min_se=90)
    off = settings_from_mapping({"sca": {"session_timers": False}}, "t")
    assert not off.sca.session_timers


def test_nat_defaults_and_refusals() -> None:
    nat = load_settings(None).nat
    assert (nat.ping_interval, nat.ping_method, nat.ping_all, nat.ping_from) == (
        30.0,
        "options",
        False,
        "keepalive",
    )
    assert load_settings(DEMO).nat == nat
    crlf = settings_from_mapping({"nat": {"ping_method": "crlf", "ping_interval": 0}}, "t").nat
    assert (crlf.ping_method, crlf.ping_interval) == ("crlf", 0.0)
    for bad in ({"ping_method": "stun"}, {"ping_interval": -1}, {"ping_every": 5}):
        with pytest.raises(ConfigError) as caught:
            settings_from_mapping({"nat": bad}, "t")
        assert caught.value.key.startswith("nat"), caught.value.key


def test_the_sip_timers_are_the_transaction_layers_own_settings() -> None:
    settings = settings_from_mapping({"sip": {"t1": 0.25, "t2": 2, "max_message_size": 4096}}, "f")
    assert settings.sip.timers == TimerConfig(t1=0.25, t2=2.0, t4=5.0)
    assert settings.sip.max_message_size == 4096
    assert load_settings(None).sip.timers == TimerConfig()
