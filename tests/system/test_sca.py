"""Shared call appearances end to end: the real scaserver process on loopback, three
simulated handsets on one shared line and a called party (sca.md sections 3, 4, 6, 7, 14),
on SQLite and PostgreSQL.

Scenarios: the outgoing call's life seen by the group (S3, S6, S9), a SIPp handset as one
of the members, the seize race (S4), retransmitted SUBSCRIBEs absorbed by their
transactions, a member vanishing in the middle of a seize (S5, S16), odd request
sequences that must neither crash the server nor wedge the line, a restart in the middle
of a held call (S14), and digest authentication of SUBSCRIBE.
"""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from scaserver.sca.callinfo import CallInfo
from scaserver.sip import headers
from scaserver.sip.message import Headers, Request, Response
from scaserver.sip.parser import parse_message
from scaserver.sip.serializer import serialize
from tests.system.accounts import add_subscribers
from tests.system.handset import WAIT, Dialog, Handset, Notify, handsets, new_tag, sdp
from tests.system.server import RunningServer, options_request, running_server, udp_exchange
from tests.system.sipp import Sipp, start_sipp

pytestmark = pytest.mark.system

DOMAIN = "example.test"
LINE = f"sip:2001@{DOMAIN}"
CALLEE = f"sip:callee@{DOMAIN}"


def config(*, auth: bool = False, t1: float | None = None, seize_expires: int = 15, extra: str = "") -> str:
    """A server for one shared line with two appearances."""
    sip = f"[sip]\nt1 = {t1}\n" if t1 is not None else ""
    auth_block = 'require = true\nalgorithms = ["MD5"]' if auth else "require = false"
    members = '["sip:alice@example.test", "sip:bob@example.test"]' if auth else "[]"
    return f"""
[server]
domains = ["{DOMAIN}"]
{sip}[auth]
{auth_block}
[database]
flush_interval = 0.3
[sca]
line_seize_max_expires = {seize_expires}
{extra}
[[sca.lines]]
aor = "{LINE}"
appearances = 2
members = {members}
"""


@contextmanager
def server_for(tmp_path: Path, db_url: str, text: str) -> Iterator[RunningServer]:
    with running_server(tmp_path / "server", text, db_url=db_url) as server:
        yield server


def rpc(server: RunningServer, method: str, *params: object) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/RPC",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        document = json.loads(reply.read())
    assert "error" not in document, document
    return document["result"]


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def member(name: str, server: RunningServer, **options: Any) -> Handset:
    return Handset(name, ("127.0.0.1", server.sip_port), line=LINE, **options)


def subscribed(phone: Handset) -> Dialog:
    """Subscribe ``phone`` to call-info and wait for the first (full-state) NOTIFY."""
    response, dialog, _ = phone.subscribe("call-info")
    assert response.status == 202, response
    phone.wait_notify(lambda n: n.event == "call-info" and n.call_id == dialog.call_id)
    return dialog


def saw(phones: tuple[Handset, ...], accept: Callable[[Notify], bool]) -> list[Notify]:
    """Every phone gets a call-info NOTIFY that ``accept``s."""
    return [phone.wait_notify(lambda n: n.event == "call-info" and accept(n)) for phone in phones]


def state_is(index: int, state: str | None) -> Callable[[Notify], bool]:
    return lambda n: n.state_of(index) == state


def all_idle(notify: Notify) -> bool:
    return notify.appearances() == {None: ("idle", None)}


def appearances(server: RunningServer) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = rpc(server, "sca.all_appearances")
    return found


@attrs.define
class HeldCall:
    """A's call to the callee, on hold: both ends of the dialog."""

    caller: Dialog
    callee: Dialog


def place_call(
    a: Handset, callee: Handset, watchers: tuple[Handset, ...], sipp: SippMember | None = None
) -> HeldCall:
    """S3: A seizes index 1, calls the callee, the callee rings and answers; every watcher
    sees seized, progressing, active in turn."""
    response, _, _ = a.subscribe("line-seize", expires=15, index=1)
    assert response.status == 200, response
    seize = a.wait_notify(lambda n: n.event == "line-seize")
    assert seize.call_info == f"<sip:{DOMAIN}>;appearance-index=1"
    assert seize.subscription_state.startswith("active;expires=")
    saw((a, *watchers), state_is(1, "seized"))
    if sipp is not None:
        sipp.wait_state("seized")
    invite_tx, caller = a.invite(CALLEE, index=1)
    invite = callee.expect_request("INVITE")
    assert "appearance-index" not in ",".join(invite.headers.lines("Call-Info")), "SCA Call-Info leaked (5.3)"
    ringing = callee.uas_dialog(invite)
    callee.respond(invite, 180, to_tag=ringing.local_tag)
    a.wait_response(invite_tx, lambda r: r.status == 180)
    saw(watchers, state_is(1, "progressing"))
    if sipp is not None:
        sipp.wait_state("progressing")
    ended = a.wait_notify(lambda n: n.event == "line-seize" and n.terminated)
    assert ended.subscription_state.replace(" ", "") == "terminated;reason=noresource"
    assert ended.call_info == f"<sip:{DOMAIN}>;appearance-index=1"
    callee.respond(invite, 200, to_tag=ringing.local_tag, body=sdp(callee.port))
    ok = a.wait_response(invite_tx)
    assert ok.status == 200, ok
    a.established(caller, ok)
    a.ack(caller, invite_tx, ok)
    callee.expect_request("ACK")
    for notify in saw(watchers, state_is(1, "active")):
        assert notify.appearances()[1] == ("active", f"<{CALLEE}>")
        assert notify.appearances()[None] == ("idle", None)
    if sipp is not None:
        sipp.wait_state("active")
    return HeldCall(caller, ringing)


def hold(
    a: Handset, callee: Handset, call: HeldCall, watchers: tuple[Handset, ...], sipp: SippMember | None = None
) -> None:
    """S6: A re-INVITEs with sendonly SDP; the group sees index 1 held."""
    tx = a.send_in_dialog(call.caller, "INVITE", body=sdp(a.port, "sendonly"))
    reinvite = callee.expect_request("INVITE")
    callee.respond(reinvite, 200, body=sdp(callee.port, "recvonly"))
    ok = a.wait_response(tx)
    assert ok.status == 200, ok
    a.ack(call.caller, tx, ok)
    callee.expect_request("ACK")
    for notify in saw(watchers, state_is(1, "held")):
        assert notify.appearances()[1] == ("held", f"<{CALLEE}>")
    if sipp is not None:
        sipp.wait_state("held")


def retrieve_and_hang_up(
    server: RunningServer,
    a: Handset,
    c: Handset,
    *,
    callee: Handset,
    call: HeldCall,
    watchers: tuple[Handset, ...],
    sipp: SippMember | None = None,
) -> None:
    """S9: C picks the held call up (INVITE to the line with the appearance index, 7.1), the
    callee gets it with Replaces and ends A's leg; then C hangs up and the line is idle."""
    tx, pickup = c.invite(LINE, index=1)
    invite = callee.expect_request("INVITE")
    assert invite.uri == callee.contact  # re-targeted to the held call's remote party (7.1 step 1)
    expected = f"{call.caller.call_id};to-tag={call.callee.local_tag};from-tag={call.caller.local_tag}"
    assert invite.headers.get("Replaces") == expected
    saw((a, c, *watchers), state_is(1, "active"))
    if sipp is not None:
        sipp.wait_state("active")
    found = appearances(server)
    assert [(x["index"], x["state"], x["owner"]) for x in found] == [(1, "active", c.contact)]
    answered = callee.uas_dialog(invite)
    callee.respond(invite, 200, to_tag=answered.local_tag, body=sdp(callee.port))
    ok = c.wait_response(tx)
    assert ok.status == 200, ok
    c.established(pickup, ok)
    c.ack(pickup, tx, ok)
    callee.expect_request("ACK")
    # The replaced leg ends: the callee sends BYE to A, which changes nothing on the line.
    bye_tx = callee.send_in_dialog(call.callee, "BYE")
    bye = a.expect_request("BYE")
    a.respond(bye, 200)
    assert callee.wait_response(bye_tx).status == 200
    assert [(x["index"], x["state"], x["owner"]) for x in appearances(server)] == [(1, "active", c.contact)]
    # C hangs up: idle everywhere.
    bye_tx = c.send_in_dialog(pickup, "BYE")
    callee.respond(callee.expect_request("BYE"), 200)
    assert c.wait_response(bye_tx).status == 200
    saw((a, c, *watchers), all_idle)
    if sipp is not None:
        sipp.wait_state(None)
    assert appearances(server) == []


@attrs.define
class SippMember:
    """A member played by SIPp (``sca-call-info-member.xml``): its call-info NOTIFYs are read
    back from the SIPp log file."""

    sipp: Sipp
    log: Path

    @property
    def contact(self) -> str:
        return f"sip:2001@127.0.0.1:{self.sipp.port}"

    def notifies(self) -> list[tuple[int, str, str]]:
        """(CSeq, Subscription-State, Call-Info) of every NOTIFY SIPp answered so far."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("NOTIFY|") and line.endswith("|"):
                _, number, state, info, _ = line.split("|", 4)
                found.append(
                    (int(number.split()[1]), state.partition(":")[2].strip(), info.partition(":")[2])
                )
        return found

    def states(self, index: int = 1) -> list[str | None]:
        states: list[str | None] = []
        for _, _, info in self.notifies():
            entries = {e.index: e.state for e in CallInfo.parse([info]).entries}
            state = entries.get(index)
            wire = None if state is None else state.wire
            if not states or states[-1] != wire:
                states.append(wire)
        return states

    def wait_state(self, state: str | None, index: int = 1) -> None:
        eventually(lambda: self.states(index)[-1:] == [state], WAIT, f"SIPp member sees {index} {state}")


@contextmanager
def sipp_member(server: RunningServer, workdir: Path) -> Iterator[SippMember]:
    log = workdir / "member.log"
    sipp = start_sipp(
        "sca-call-info-member.xml",
        server,
        workdir,
        keys=(("line", "2001"),),
        extra=("-trace_logs", "-log_file", str(log)),
        timeout_s=60.0,
    )
    try:
        watcher = SippMember(sipp, log)
        eventually(lambda: watcher.states() == [None], WAIT, "SIPp member subscribed and notified")
        yield watcher
    finally:
        sipp.stop()


def test_outgoing_call_hold_retrieve_and_hang_up(tmp_path: Path, db_url: str) -> None:
    """The issue's end-to-end scenario: A seizes and calls out, the callee rings and answers,
    A holds, C retrieves, C hangs up.  B is SIPp."""
    with server_for(tmp_path, db_url, config()) as server, sipp_member(server, tmp_path / "sipp") as b:
        a, c = member("a", server), member("c", server)
        callee = Handset("callee", ("127.0.0.1", server.sip_port), line=CALLEE)
        with handsets(a, c, callee):
            for phone in (a, c, callee):
                assert phone.register().status == 200
            for phone in (a, c):
                subscribed(phone)
            call = place_call(a, callee, (c,), sipp=b)
            hold(a, callee, call, (a, c), sipp=b)
            retrieve_and_hang_up(server, a, c, callee=callee, call=call, watchers=(), sipp=b)
            for phone in (a, c):
                assert phone.line_states() == [
                    None,
                    "seized",
                    "progressing",
                    "active",
                    "held",
                    "active",
                    None,
                ]
                numbers = [n.cseq for n in phone.call_info_notifies()]
                assert numbers == sorted(set(numbers)), numbers
        rpc(server, "sca.deactivate_subscription", LINE, "call-info", b.contact)
        result = b.sipp.wait(20)
        assert result.returncode == 0, result.report()
        assert b.states() == [None, "seized", "progressing", "active", "held", "active", None]
        notified = b.notifies()
        assert [n for n, _, _ in notified] == list(range(1, len(notified) + 1))
        assert notified[-1][1].replace(" ", "") == "terminated;reason=deactivated"
        active = [info for _, _, info in notified if "appearance-state=active" in info]
        assert all(f'appearance-uri="<{CALLEE}>"' in info for info in active)


def test_seize_race_one_wins_the_other_gets_480_with_retry_after(tmp_path: Path, db_url: str) -> None:
    """S4: two members seize index 1 at the same moment; then the loser takes any free
    index (2), and with both appearances in use a third seize is refused."""
    with server_for(tmp_path, db_url, config()) as server:
        a, b, c = member("a", server), member("b", server), member("c", server)
        with handsets(a, b, c):
            subscribed(c)
            seizes = []
            for phone in (a, b):
                request = phone.build(
                    "SUBSCRIBE",
                    LINE,
                    from_=f"<{LINE}>;tag={uuid.uuid4().hex[:8]}",
                    to=f"<{LINE}>",
                    call_id=uuid.uuid4().hex,
                    cseq=1,
                    extra=(
                        ("Event", "line-seize"),
                        ("Expires", "15"),
                        ("Call-Info", f"<sip:{DOMAIN}>;appearance-index=1"),
                    ),
                )
                seizes.append((phone, request))
            transactions = [(phone, phone.start(request)) for phone, request in seizes]  # back to back
            answers = {phone.name: phone.wait_response(tx) for phone, tx in transactions}
            statuses = sorted(r.status for r in answers.values())
            assert statuses == [200, 480], answers
            loser_name = next(name for name, r in answers.items() if r.status == 480)
            refusal = answers[loser_name]
            assert refusal.headers.get("Retry-After") == "1"
            winner = a if loser_name == "b" else b
            loser = b if winner is a else a
            owners = [(x["index"], x["state"], x["owner"]) for x in appearances(server)]
            assert owners == [(1, "seized", winner.contact)]
            response, _, _ = loser.subscribe("line-seize", expires=15, index=0)
            assert response.status == 200
            notify = loser.wait_notify(lambda n: n.event == "line-seize")
            assert notify.call_info == f"<sip:{DOMAIN}>;appearance-index=2"
            both = c.wait_notify(lambda n: n.state_of(1) == "seized" and n.state_of(2) == "seized")
            assert list(both.appearances()) == [1, 2, None]
            response, _, _ = c.subscribe("line-seize", expires=15, index=0)
            assert response.status == 480 and response.headers.get("Retry-After") == "1"


def raw_subscribe(
    phone: Handset,
    event: str,
    *,
    index: int | None,
    expires: int,
    to_tag: str | None = None,
    call_id: str | None = None,
    from_tag: str | None = None,
    cseq: int = 1,
) -> bytes:
    extra = [("Event", event), ("Expires", str(expires))]
    if index is not None:
        extra.append(("Call-Info", f"<sip:{DOMAIN}>;appearance-index={index}"))
    to = f"<{LINE}>" + (f";tag={to_tag}" if to_tag else "")
    request = phone.build(
        "SUBSCRIBE",
        LINE,
        from_=f"<{LINE}>;tag={from_tag or uuid.uuid4().hex[:8]}",
        to=to,
        call_id=call_id or uuid.uuid4().hex,
        cseq=cseq,
        extra=tuple(extra),
    )
    return serialize(request)


def exchange_twice(phone: Handset, data: bytes) -> list[Response]:
    """Send the same SUBSCRIBE (same branch) twice, 50 ms apart; both answers, which must
    come from one transaction (one To-tag)."""
    request = parse_message(data)
    assert isinstance(request, Request)
    tx = phone.start(request)
    time.sleep(0.05)
    phone.send_bytes(data)
    eventually(lambda: len(tx.responses) >= 2, WAIT, "two answers to a retransmitted SUBSCRIBE")
    tags = {headers.to_addr(r).tag for r in tx.responses}
    assert len(tags) == 1, "a retransmission got an answer from a second transaction"
    return tx.responses[:2]


def statuses(responses: list[Response]) -> list[int]:
    return [r.status for r in responses]


def test_retransmitted_subscribe_is_absorbed_by_its_transaction(tmp_path: Path, db_url: str) -> None:
    """A repeated line-seize (same branch) gets the same 200, never a 480; a repeated
    release never a 500; a repeated call-info SUBSCRIBE the same 202 (RFC 3261 17.2.2)."""
    with server_for(tmp_path, db_url, config()) as server:
        a, b = member("a", server), member("b", server)
        with handsets(a, b):
            subscribed(b)
            call_info = exchange_twice(a, raw_subscribe(a, "call-info", index=None, expires=600))
            assert statuses(call_info) == [202, 202]
            seize = raw_subscribe(a, "line-seize", index=1, expires=15)
            seized = exchange_twice(a, seize)
            assert statuses(seized) == [200, 200]
            first = seized[0]
            seize_request = parse_message(seize)
            assert isinstance(seize_request, Request)
            b.wait_notify(state_is(1, "seized"))
            assert [(x["index"], x["state"]) for x in appearances(server)] == [(1, "seized")]
            sequence = headers.cseq(seize_request).number
            release = raw_subscribe(
                a,
                "line-seize",
                index=1,
                expires=0,
                to_tag=headers.to_addr(first).tag,
                call_id=seize_request.call_id,
                from_tag=headers.from_addr(seize_request).tag,
                cseq=sequence + 1,
            )
            assert statuses(exchange_twice(a, release)) == [200, 200]
            b.wait_notify(all_idle, after=1)
            assert appearances(server) == []
            # The same release again as a new transaction: idempotent (3.2 row 14), no 500.
            again = raw_subscribe(a, "line-seize", index=1, expires=0)
            assert statuses(exchange_twice(a, again)) == [200, 200]
            assert server.process.poll() is None


def test_vanished_handset_leaves_no_stuck_appearance(tmp_path: Path, db_url: str) -> None:
    """S5/S16: V seizes and stops answering in the middle of the seize: its NOTIFYs time
    out (64*T1, T1 shortened to 0.1 s), the seize still ends at the line-seize expiry (2 s),
    the group sees the line idle, V's subscriptions are removed, the index can be seized again."""
    text = config(t1=0.1, seize_expires=2)
    with server_for(tmp_path, db_url, text) as server:
        v, b = member("v", server), member("b", server)
        with handsets(v, b):
            subscribed(v)
            subscribed(b)
            v.mute()
            response, _, _ = v.subscribe("line-seize", expires=15, index=1)
            assert response.status == 200 and response.headers.get("Expires") == "2"
            seized = b.wait_notify(state_is(1, "seized"))
            started = time.monotonic()
            b.wait_notify(all_idle, timeout=5.0, after=b.notifies.index(seized) + 1)
            assert time.monotonic() - started < 2 + 1.5, "the seize outlived its expiry by more than 1 s"
            assert appearances(server) == []

            def v_gone() -> bool:
                subs = rpc(server, "sca.all_subscriptions")
                return all(sub["contact"] != v.contact for sub in subs)

            eventually(v_gone, 64 * 0.1 + 3, "V's subscriptions removed after its NOTIFYs timed out")
            response, _, _ = b.subscribe("line-seize", expires=15, index=1)
            assert response.status == 200
            b.wait_notify(lambda n: n.event == "call-info" and n.state_of(1) == "seized", after=0)
            assert server.process.poll() is None


def test_restart_in_the_middle_of_a_held_call(tmp_path: Path, db_url: str) -> None:
    """S14: SIGTERM while A's call is held, start again on the same database: the call-info
    subscriptions and the held appearance are restored, the first NOTIFY after the restart
    shows index 1 held with a CSeq above the last one sent before, and the restored dialogs
    go on (an in-dialog refresh is accepted)."""
    first = running_server(tmp_path / "first", config(), db_url=db_url)
    server = first.__enter__()
    try:
        a, b = member("a", server), member("b", server)
        callee = Handset("callee", ("127.0.0.1", server.sip_port), line=CALLEE)
        with handsets(a, b, callee):
            for phone in (a, b, callee):
                assert phone.register().status == 200
            dialogs = {phone.name: subscribed(phone) for phone in (a, b)}
            call = place_call(a, callee, (b,))
            hold(a, callee, call, (a, b))
            before = {phone.name: phone.call_info_notifies()[-1].cseq for phone in (a, b)}
            held = appearances(server)
            assert [(x["index"], x["state"], x["owner"]) for x in held] == [(1, "held", a.contact)]
            assert server.stop(signal.SIGTERM) == 0
            first.__exit__(None, None, None)
            counts = {phone.name: len(phone.notifies) for phone in (a, b)}
            with running_server(tmp_path / "second", config(), db_url=db_url) as again:
                for phone in (a, b, callee):
                    phone.server = ("127.0.0.1", again.sip_port)
                for phone in (a, b):
                    resync = phone.wait_notify(lambda n: n.event == "call-info", after=counts[phone.name])
                    assert resync.cseq > before[phone.name]
                    assert resync.call_id == dialogs[phone.name].call_id
                    assert resync.appearances()[1] == ("held", f"<{CALLEE}>")
                subs = rpc(again, "sca.all_subscriptions")
                assert sorted((s["event"], s["contact"]) for s in subs) == sorted(
                    [("call-info", a.contact), ("call-info", b.contact)]
                )
                restored = appearances(again)
                assert [(x["index"], x["state"], x["owner"]) for x in restored] == [(1, "held", a.contact)]
                assert restored[0]["call_id"] == call.caller.call_id
                last = b.call_info_notifies()[-1].cseq
                response, _, _ = b.subscribe("call-info", dialog=dialogs["b"])
                assert response.status == 202
                refreshed = b.wait_notify(lambda n: n.event == "call-info" and n.cseq > last)
                assert refreshed.state_of(1) == "held"
    finally:
        first.__exit__(None, None, None)


def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path: Path, db_url: str) -> None:
    """sca.md 10.3 / the issue: a crash (SIGKILL, no final flush) keeps everything older than
    ``database.flush_interval`` (0.3 s here): subscriptions and a seized appearance."""
    first = running_server(tmp_path / "first", config(seize_expires=15), db_url=db_url)
    server = first.__enter__()
    try:
        a, b = member("a", server), member("b", server)
        with handsets(a, b):
            for phone in (a, b):
                assert phone.register().status == 200
                subscribed(phone)
            assert rpc(server, "sca.seize_appearance", LINE, a.contact)["index"] == 1
            time.sleep(1.0)  # more than the flush interval: the write-behind queue has written it
            server.process.kill()
            server.process.wait(5)
            first.__exit__(None, None, None)
            with running_server(tmp_path / "second", config(seize_expires=15), db_url=db_url) as again:
                subs = rpc(again, "sca.all_subscriptions")
                assert sorted(s["contact"] for s in subs) == sorted([a.contact, b.contact])
                restored = appearances(again)
                assert [(x["index"], x["state"], x["owner"]) for x in restored] == [(1, "seized", a.contact)]
    finally:
        first.__exit__(None, None, None)


def test_subscribe_with_digest_authentication(tmp_path: Path, db_url: str) -> None:
    """With ``[auth] require = true``: SUBSCRIBE gets 401, then 202 with credentials of a
    subscriber of the ``subscriber`` table; a valid user who is not a member of the line
    gets 403 (3.2 row 6); a wrong password never gets through."""
    add_subscribers(db_url, [("alice", "alice-secret"), ("carol", "carol-secret")])
    with server_for(tmp_path, db_url, config(auth=True)) as server:
        alice = member("alice", server, username="alice", password="alice-secret")
        carol = member("carol", server, username="carol", password="carol-secret")
        mallory = member("mallory", server, username="alice", password="wrong")
        with handsets(alice, carol, mallory):
            request = alice.build(
                "SUBSCRIBE",
                LINE,
                from_=f"<{LINE}>;tag={uuid.uuid4().hex[:8]}",
                to=f"<{LINE}>",
                call_id=uuid.uuid4().hex,
                cseq=1,
                extra=(("Event", "call-info"), ("Expires", "600")),
            )
            challenge = alice.request(request)
            assert challenge.status == 401, challenge
            assert "WWW-Authenticate" in challenge.headers
            accepted = alice.request(alice.with_credentials(request, challenge))
            assert accepted.status == 202, accepted
            alice.wait_notify(lambda n: n.event == "call-info" and all_idle(n))
            response, _, _ = alice.subscribe("line-seize", expires=15, index=1)
            assert response.status == 200
            alice.wait_notify(state_is(1, "seized"))
            refused, _, _ = carol.subscribe("call-info")
            assert refused.status == 403, refused
            rejected, _, _ = mallory.subscribe("call-info")
            assert rejected.status in (401, 403), rejected
            contacts = {s["contact"] for s in rpc(server, "sca.all_subscriptions")}
            assert contacts == {alice.contact}


def odd_requests(phone: Handset) -> list[tuple[str, bytes, Callable[[int], bool]]]:
    """Requests a broken or confused phone may send, with the statuses each may get."""

    def build(method: str, uri: str, *extra: tuple[str, str], to_tag: str | None = None) -> bytes:
        to = f"<{LINE}>" + (f";tag={to_tag}" if to_tag else "")
        request = phone.build(
            method,
            uri,
            from_=f"<{LINE}>;tag={new_tag()}",
            to=to,
            call_id=uuid.uuid4().hex,
            cseq=1,
            extra=extra,
        )
        return serialize(request)

    seize = ("Event", "line-seize")
    return [
        (
            "release of an index not in use",
            raw_subscribe(phone, "line-seize", index=2, expires=0),
            (200).__eq__,
        ),
        (
            "seize of *",
            build("SUBSCRIBE", LINE, seize, ("Call-Info", f"<sip:{DOMAIN}>;appearance-index=*")),
            (400).__eq__,
        ),
        ("seize beyond the line", raw_subscribe(phone, "line-seize", index=99, expires=15), (480).__eq__),
        (
            "seize with a bad index",
            build("SUBSCRIBE", LINE, seize, ("Call-Info", "<sip:x>;appearance-index=x")),
            (400).__eq__,
        ),
        ("seize without Call-Info", build("SUBSCRIBE", LINE, seize, ("Expires", "15")), (400).__eq__),
        (
            "refresh of an unknown dialog",
            raw_subscribe(phone, "line-seize", index=1, expires=15, to_tag="nope"),
            (481).__eq__,
        ),
        (
            "unknown package",
            build("SUBSCRIBE", LINE, ("Event", "presence")),
            lambda status: status in (480, 489),
        ),
        ("huge Expires", raw_subscribe(phone, "line-seize", index=1, expires=4294967295), (200).__eq__),
        ("its release", raw_subscribe(phone, "line-seize", index=1, expires=0), (200).__eq__),
        ("BYE of no dialog", build("BYE", f"sip:127.0.0.1:{phone.server[1]}", to_tag="x"), (481).__eq__),
        ("CANCEL of nothing", build("CANCEL", CALLEE), (481).__eq__),
        (
            "pickup of an idle index",
            build("INVITE", LINE, ("Call-Info", f"<sip:{DOMAIN}>;appearance-index=1")),
            lambda status: status >= 400,
        ),
        (
            "INVITE to nobody with an index",
            build("INVITE", CALLEE, ("Call-Info", f"<sip:{DOMAIN}>;appearance-index=2")),
            lambda status: status >= 400,
        ),
        (
            "re-INVITE of no dialog",
            build("INVITE", f"sip:127.0.0.1:{phone.server[1]}", to_tag="gone"),
            lambda status: status >= 400,
        ),
        (
            "NOTIFY to the server",
            build("NOTIFY", LINE, ("Event", "call-info"), ("Subscription-State", "active")),
            lambda status: status >= 400,
        ),
    ]


def test_no_sequence_of_requests_crashes_the_server_or_wedges_the_line(tmp_path: Path, db_url: str) -> None:
    """Odd requests, then a seeded random mix of seizes, releases, refreshes, re-subscribes
    and failing calls from three members: every request is answered, the process stays up,
    and within the line-seize expiry the line is idle and can be seized again."""
    with server_for(tmp_path, db_url, config(seize_expires=2)) as server:
        a, b, c, watcher = (member(name, server) for name in ("a", "b", "c", "w"))
        with handsets(a, b, c, watcher):
            subscribed(watcher)
            for what, data, expected in odd_requests(a):
                request = parse_message(data)
                assert isinstance(request, Request)
                response = a.wait_response(a.start(request), lambda r: r.status >= 200 or False)
                assert expected(response.status), f"{what}: {response.status} {response.reason}"
                if request.method == "INVITE" and response.status >= 300:
                    a.send_bytes(serialize(Request("ACK", request.uri, _ack_headers(request, response))))
            rng = random.Random(20261124)
            seizes: dict[str, tuple[Dialog, int]] = {}
            for step in range(60):
                phone = rng.choice((a, b, c))
                action = rng.choice(("seize", "seize-any", "refresh", "release", "call", "resubscribe"))
                if action in ("seize", "seize-any"):
                    response, dialog, _ = phone.subscribe(
                        "line-seize", expires=2, index=rng.randint(1, 2) if action == "seize" else 0
                    )
                    assert response.status in (200, 480), (step, response)
                    if response.status == 200:
                        granted = phone.wait_notify(seize_notify_of(dialog))
                        seizes[phone.name] = (dialog, next(i for i in granted.appearances() if i is not None))
                elif action in ("refresh", "release") and phone.name in seizes:
                    dialog, index = seizes[phone.name]
                    response, _, _ = phone.subscribe(
                        "line-seize", expires=2 if action == "refresh" else 0, dialog=dialog, index=index
                    )
                    assert response.status in (200, 481), (step, response)
                    if action == "release":
                        del seizes[phone.name]
                elif action == "call":
                    tx, dialog = phone.invite(f"sip:nobody@{DOMAIN}", index=rng.randint(1, 2))
                    final = phone.wait_response(tx)
                    assert final.status >= 400, (step, final)
                    phone.ack(dialog, tx, final)
                elif action == "resubscribe":
                    response, _, _ = phone.subscribe("call-info", expires=rng.choice((0, 60)))
                    assert response.status == 202, (step, response)
                assert server.process.poll() is None, server.log()[-3000:]
            eventually(lambda: appearances(server) == [], 2 + 3, "every appearance released")
            watcher.wait_notify(all_idle, after=len(watcher.notifies) - 1)
            response, _, _ = watcher.subscribe("line-seize", expires=15, index=1)
            assert response.status == 200
            watcher.wait_notify(state_is(1, "seized"))
            answer = udp_exchange(server.sip_port, options_request(server.sip_port))
            assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
            assert server.process.poll() is None


def seize_notify_of(dialog: Dialog) -> Callable[[Notify], bool]:
    return lambda notify: notify.event == "line-seize" and notify.call_id == dialog.call_id


def _ack_headers(invite: Request, response: Response) -> Headers:
    return Headers.of(
        ("Via", invite.headers.get("Via") or ""),
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.call_id or ""),
        ("CSeq", f"{headers.cseq(invite).number} ACK"),
    )
