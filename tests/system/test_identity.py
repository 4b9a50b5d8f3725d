"""Who is ours, who may authenticate how, and what the server tells a stranger: the real
process on loopback, set up the way an operator's first day goes (no configuration file,
subscribers added with the CLI), probed with SIPVicious and with raw digest answers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scaserver import cli
from scaserver.sip import headers
from scaserver.sip.message import Request, Response
from tests.system.accounts import add_subscribers as store_subscribers
from tests.system.handset import Handset, new_branch, new_tag
from tests.system.server import (
    ROOT,
    SCASERVER,
    RunningServer,
    free_port,
    running_server,
    tool,
    upgrade_database,
)

pytestmark = pytest.mark.system

DOMAIN = "example.test"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "100": "ext-pw", "200": "ext2-pw"}


def scaserver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCASERVER, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )


def scaserver_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``scaserver ARGS`` through its entry point in this process, without a process start."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return subprocess.CompletedProcess(["scaserver", *args], status, out.getvalue(), err.getvalue())


def add_subscribers(
    db_url: str,
    users: dict[str, str],
    *extra: str,
    command: Callable[..., subprocess.CompletedProcess[str]] = scaserver,
) -> list[str]:
    """``scaserver subscriber add`` for alice and bob, as the README says (its output lines),
    as a process of its own unless ``command`` says otherwise; the others straight into the
    store (the same rows, without a process each)."""
    upgrade_database(db_url)
    said = []
    for user, password in users.items():
        if user not in ("alice", "bob"):
            store_subscribers(db_url, [(user, password)])
            continue
        done = command(
            "subscriber", "add", f"{user}@{DOMAIN}", "--password", password, "--db", db_url, *extra
        )
        assert done.returncode == 0, done.stderr
        said.append(done.stdout.strip())
    return said


@pytest.fixture
def unconfigured(tmp_path: Path) -> Iterator[RunningServer]:
    """Started with no configuration file, after the subscribers were added with the CLI."""
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    add_subscribers(db_url, USERS, command=scaserver_here)
    with running_server(tmp_path / "server", None, db_url=db_url) as server:
        yield server


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[RunningServer]:
    """``server.domains`` configured, the subscribers added with the CLI."""
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    add_subscribers(db_url, USERS, command=scaserver_here)
    with running_server(tmp_path / "server", f'[server]\ndomains = ["{DOMAIN}"]\n', db_url=db_url) as server:
        yield server


def test_subscriber_add_says_the_realm_it_hashed_for(tmp_path: Path) -> None:
    [said] = add_subscribers(f"sqlite:///{tmp_path / 'scaserver.db'}", {"alice": "pw"})
    assert said == (
        f"subscriber alice@{DOMAIN} saved: HA1 hashed for realm '{DOMAIN}';"
        " digest algorithms: the server's auth.algorithms"
    )


def phone(server: RunningServer, user: str, password: str | None = None) -> Handset:
    return Handset(
        user,
        ("127.0.0.1", server.sip_port),
        line=f"sip:{user}@{DOMAIN}",
        username=user,
        password=USERS[user] if password is None else password,
    )


def refusal_lines(server: RunningServer, call_id: str, expected: int) -> list[str]:
    """The refusal log lines of ``call_id``, once ``expected`` of them are written (5 s at most:
    the log is written as the server goes)."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            line for line in server.log().splitlines() if " refused " in line and f"call-id={call_id}" in line
        ]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# ---------------------------------------------------------------- the operator's first day


def test_with_no_configuration_cli_subscribers_register_and_call_each_other(
    unconfigured: RunningServer,
) -> None:
    alice, bob = phone(unconfigured, "alice"), phone(unconfigured, "bob")
    try:
        assert alice.register().status == 200, unconfigured.log()
        assert bob.register().status == 200, unconfigured.log()
        invite = alice.build(
            "INVITE",
            f"sip:bob@{DOMAIN}",
            from_=f"<sip:alice@{DOMAIN}>;tag={new_tag()}",
            to=f"<sip:bob@{DOMAIN}>",
            call_id=uuid.uuid4().hex,
            cseq=1,
        )
        transaction = alice.start(invite)
        challenge = alice.wait_response(transaction)
        assert challenge.status == 407
        assert f'realm="{DOMAIN}"' in (challenge.headers.get("Proxy-Authenticate") or "")
        alice.start(alice.with_credentials(invite, challenge))
        reached = bob.expect_request("INVITE")
        assert headers.from_addr(reached).uri.user == "alice"  # type: ignore[union-attr]
    finally:
        alice.close()
        bob.close()


def test_a_wrong_password_gets_a_challenge_and_a_log_line_naming_the_realm(
    unconfigured: RunningServer,
) -> None:
    mallory = phone(unconfigured, "alice", password="guess")
    try:
        assert mallory.register().status == 401
        [call_id] = {m.group(1) for m in re.finditer(r"call-id=(\w+)", unconfigured.log())}
        lines = refusal_lines(unconfigured, call_id, 2)
        assert len(lines) == 2, lines  # the first challenge, then the wrong answer
        assert all(f"realm '{DOMAIN}'" in line for line in lines)
        assert "refused 401 (digest-challenge)" in lines[0]
        assert "refused 401 (digest-failed)" in lines[1] and "wrong password" in lines[1]
    finally:
        mallory.close()


def test_a_domain_that_is_not_ours_is_refused_with_one_line_naming_it(unconfigured: RunningServer) -> None:
    alice = phone(unconfigured, "alice")
    try:
        invite = alice.build(
            "INVITE",
            "sip:bob@elsewhere.test",
            from_=f"<sip:alice@{DOMAIN}>;tag={new_tag()}",
            to="<sip:bob@elsewhere.test>",
            call_id="foreign-" + uuid.uuid4().hex,
            cseq=1,
        )
        response, _ = alice.send_authenticated(invite)
        assert response.status == 403
        [line] = [
            line for line in refusal_lines(unconfigured, invite.call_id or "", 2) if "refused 403" in line
        ]
        assert "domain 'elsewhere.test' is not ours" in line
        assert "not the domain of a subscriber or line" in line and DOMAIN in line
    finally:
        alice.close()


# ---------------------------------------------------------------- digest algorithms


SHA_FIRST = f"""
[server]
domains = ["{DOMAIN}"]
[auth]
algorithms = ["SHA-256", "MD5"]
"""


def digest_answer(request: Request, challenge: Response, *, algorithm: str, nonce_of: str) -> Request:
    """``request`` answered with ``algorithm`` over the nonce of the ``nonce_of`` offer."""
    offers = {
        (headers.parse_auth(line).param("algorithm") or "MD5"): headers.parse_auth(line)
        for line in challenge.headers.lines("WWW-Authenticate")
    }
    nonce = offers[nonce_of].param("nonce") or ""
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h(f"alice:{DOMAIN}:{USERS['alice']}")
    digest = h(f"{ha1}:{nonce}:00000001:cn:auth:{h(f'{request.method}:{request.uri}')}")
    value = (
        f'Digest username="alice", realm="{DOMAIN}", nonce="{nonce}", uri="{request.uri}", '
        f'response="{digest}", algorithm={algorithm}, cnonce="cn", qop=auth, nc=00000001'
    )
    number = headers.cseq(request).number + 1
    fields = request.headers.remove("Via").remove("CSeq")
    return request.with_headers(
        fields.prepend("CSeq", f"{number} REGISTER")
        .prepend(
            "Via", (request.headers.get("Via") or "").split(";branch=")[0] + f";branch={new_branch()};rport"
        )
        .add("Authorization", value)
    )


def challenged_register(alice: Handset) -> tuple[Request, Response]:
    """A REGISTER of alice's own and the 401 it gets (the challenge the tests answer by hand)."""
    register = alice.build(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_=f"<sip:alice@{DOMAIN}>;tag={new_tag()}",
        to=f"<sip:alice@{DOMAIN}>",
        call_id=uuid.uuid4().hex,
        cseq=1,
    )
    challenge = alice.request(register)
    assert challenge.status == 401
    return register, challenge


def test_an_md5_answer_to_a_sha256_nonce_is_refused(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    add_subscribers(db_url, {"alice": USERS["alice"]})
    with running_server(tmp_path / "server", SHA_FIRST, db_url=db_url) as server:
        alice = phone(server, "alice")
        try:
            register, challenge = challenged_register(alice)
            downgraded = digest_answer(register, challenge, algorithm="MD5", nonce_of="SHA-256")
            assert alice.request(downgraded).status == 401
            nonces = [
                headers.parse_auth(v).param("nonce") for v in challenge.headers.lines("WWW-Authenticate")
            ]
            assert len(set(nonces)) == 2  # one nonce per algorithm
            honest = digest_answer(register, challenge, algorithm="MD5", nonce_of="MD5")
            assert alice.request(honest).status == 200
        finally:
            alice.close()


def test_a_digest_response_with_octets_that_are_not_utf8_is_a_wrong_answer_not_a_500(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    add_subscribers(db_url, {"alice": USERS["alice"]})
    with running_server(tmp_path / "server", "", db_url=db_url) as server:
        alice = phone(server, "alice")
        try:
            register, challenge = challenged_register(alice)
            honest = digest_answer(register, challenge, algorithm="MD5", nonce_of="MD5")
            value = honest.headers.get("Authorization") or ""
            poisoned = honest.with_headers(
                honest.headers.set("Authorization", value.replace('", algorithm', '\udcff", algorithm'))
            )
            assert "\udcff" in (poisoned.headers.get("Authorization") or "")
            assert alice.request(poisoned).status == 401  # the 0xff octet reached the server
            assert "Traceback" not in server.log() and "Unhandled" not in server.log()
        finally:
            alice.close()


def test_a_sha256_only_subscriber_is_offered_sha256_alone(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'scaserver.db'}"
    said = add_subscribers(db_url, {"alice": USERS["alice"]}, "--algorithms", "SHA-256")
    assert "digest algorithms: SHA-256" in said[0]
    with running_server(tmp_path / "server", None, db_url=db_url) as server:
        alice = phone(server, "alice")
        try:
            register = alice.build(
                "REGISTER",
                f"sip:{DOMAIN}",
                from_=f"<sip:alice@{DOMAIN}>;tag={new_tag()}",
                to=f"<sip:alice@{DOMAIN}>",
                call_id=uuid.uuid4().hex,
                cseq=1,
            )
            challenge = alice.request(register)
            offered = [
                headers.parse_auth(v).param("algorithm") for v in challenge.headers.lines("WWW-Authenticate")
            ]
            assert offered == ["SHA-256"]
            response, _ = alice.send_authenticated(register)
            assert response.status == 200
        finally:
            alice.close()


# ---------------------------------------------------------------- SIPVicious finds no one


@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "INVITE"])
def test_svwar_finds_no_user(configured: RunningServer, method: str, tmp_path: Path) -> None:
    online = [phone(configured, user) for user in ("100", "alice")]
    try:
        for handset in online:
            assert handset.register().status == 200
        dictionary = tmp_path / "names.txt"
        dictionary.write_text(
            "\n".join(["alice", "bob", "carol", "dave", "eve", "mallory", "100", "200", "300"])
        )
        result = subprocess.run(
            [
                tool("svwar"),
                "-m",
                method,
                "-e",
                "100-205",
                "-d",
                str(dictionary),
                "--domain",
                DOMAIN,
                "-p",
                str(configured.sip_port),
                "--force",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=tmp_path,
        )
        report = result.stdout + result.stderr
        found = re.findall(r"^\|\s*(\S+)\s*\|\s*(\w+)\s*\|", result.stdout, flags=re.MULTILINE)
        assert [row for row in found if row[0] != "Extension"] == [], report
    finally:
        for handset in online:
            handset.close()


# ---------------------------------------------------------------- real phones, default configuration


def baresip(workdir: Path, server: RunningServer, user: str) -> subprocess.CompletedProcess[str]:
    """baresip 1.0 (MD5 only: it gives up on any challenge offering SHA-256), run for 6 s."""
    port = free_port()
    workdir.mkdir(parents=True)
    (workdir / "config").write_text(
        f"poll_method poll\nsip_listen 127.0.0.1:{port}\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule_app account.so\n"
        "audio_source ausine,440\naudio_player aubridge,test\nausrc_srate 48000\nausrc_channels 2\n"
    )
    (workdir / "accounts").write_text(
        f"<sip:{user}@{DOMAIN};transport=udp>;auth_user={user};auth_pass={USERS[user]};"
        f'outbound="sip:127.0.0.1:{server.sip_port};transport=udp";regint=300\n'
    )
    (workdir / "contacts").write_text("")
    command = [tool("baresip"), "-f", str(workdir), "-n", "127.0.0.1", "-t", "6"]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)


def linphonec(workdir: Path, server: RunningServer, user: str) -> subprocess.CompletedProcess[str]:
    """linphonec 5.1 (answers SHA-256 and MD5, then keeps the algorithm it used), 8 s."""
    (workdir / ".local" / "share" / "linphone").mkdir(parents=True)
    rc = workdir / "linphonerc"
    rc.write_text(
        f"[sip]\nsip_port={free_port()}\nsip_tcp_port=-1\n"
        f"[proxy_0]\nreg_proxy=<sip:127.0.0.1:{server.sip_port};transport=udp>\n"
        f"reg_identity=sip:{user}@{DOMAIN}\nreg_expires=300\nreg_sendregister=1\n"
        f"[auth_info_0]\nusername={user}\nuserid={user}\npasswd={USERS[user]}\nrealm={DOMAIN}\ndomain={DOMAIN}\n"
        "[video]\ncapture=0\ndisplay=0\n"
    )
    script = "sleep 8; echo quit"
    command = f"({script}) | {tool('linphonec')} -c {rc}"
    env = {"HOME": str(workdir), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        command, shell=True, capture_output=True, text=True, check=False, timeout=30, env=env
    )


def twinkle(workdir: Path, server: RunningServer, user: str) -> subprocess.CompletedProcess[str]:
    """twinkle-console 1.10 (MD5), 8 s."""
    home = workdir / ".twinkle"
    home.mkdir(parents=True)
    port = free_port()
    (home / "twinkle.sys").write_text(
        "dev_ringtone=alsa:null\ndev_speaker=alsa:null\ndev_mic=alsa:null\nvalidate_audio_dev=no\n"
        f"sip_port={port}\nrtp_port={free_port()}\n"
    )
    (home / f"{user}.cfg").write_text(
        f"user_name={user}\nuser_domain={DOMAIN}\nauth_realm={DOMAIN}\nauth_name={user}\n"
        f"auth_pass={USERS[user]}\nregistrar=127.0.0.1:{server.sip_port}\nregister_at_startup=yes\n"
        "registration_time=300\nsip_transport=udp\n"
    )
    command = f"(sleep 8; echo quit) | {tool('twinkle-console')} {user}.cfg"
    env = {"HOME": str(workdir), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        command, shell=True, capture_output=True, text=True, check=False, timeout=30, env=env, cwd=home
    )


def test_real_phones_register_with_the_default_configuration(
    unconfigured: RunningServer, tmp_path: Path
) -> None:
    """baresip, linphonec and twinkle-console, each as a subscriber the CLI added, against a
    server started with no configuration file."""
    for run, user in ((baresip, "alice"), (linphonec, "bob"), (twinkle, "carol")):
        done = run(tmp_path / run.__name__, unconfigured, user)
        added = f"binding added: sip:{user}@{DOMAIN}"
        assert added in unconfigured.log(), (
            f"{run.__name__}:\n{done.stdout}\n{done.stderr}\n{unconfigured.log()}"
        )
