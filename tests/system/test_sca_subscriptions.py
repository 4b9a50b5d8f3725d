"""Who may use an SCA subscription, over real sockets against the real server (sca.md 3.2
row 6, row 11, 3.5, 10.3), on SQLite and PostgreSQL.

Members authenticate with digest and use Contact users that are not their account names
(as baresip's ``3000-0x...`` does); they refresh, seize, release and unsubscribe inside
their dialogs as phones do, while another member's attempts on the same dialogs are
refused.  Two phones behind two NATs with the same private Contact keep one subscription
each, and after a restart (SIGTERM or kill -9) the NOTIFYs still reach each phone's
source address, not its Contact.  A member that reboots in a call, whose subscription was
removed because a NOTIFY to it timed out, has its appearance cleared when it subscribes
again.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from pathlib import Path

import attrs
import pytest

from scaserver.edge.pacing import MAX_WAIT_S, RESTORE_NOTIFY_BATCH, RESTORE_NOTIFY_WINDOW
from scaserver.sca.subscription import Package, Subscription
from scaserver.sip.message import Peer, Request, Transport
from scaserver.sip.parser import parse_message
from scaserver.store.sql import SqlStore
from tests.system.accounts import add_subscribers
from tests.system.handset import Dialog, Handset, handsets, new_tag
from tests.system.server import RunningServer, running_server
from tests.system.test_sca import DOMAIN, LINE, all_idle, appearances, eventually, rpc, state_is

pytestmark = pytest.mark.system

NAT_CONTACT = "sip:2001@192.168.1.100:5060"  # a private address nobody on loopback owns
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "2001": "line-secret"}


def config(*, t1: float | None = None) -> str:
    sip = f"[sip]\nt1 = {t1}\n" if t1 is not None else ""
    return f"""
[server]
domains = ["{DOMAIN}"]
{sip}[auth]
require = true
algorithms = ["MD5"]
[database]
flush_interval = 0.3
[sca]
line_seize_max_expires = 15
[[sca.lines]]
aor = "{LINE}"
appearances = 2
members = ["sip:alice@{DOMAIN}", "sip:bob@{DOMAIN}", "sip:2001@{DOMAIN}"]
"""


def phone(name: str, server: RunningServer, user: str, *, contact_user: str | None = None) -> Handset:
    return Handset(
        name,
        ("127.0.0.1", server.sip_port),
        line=LINE,
        contact_user=contact_user,
        username=user,
        password=PASSWORDS[user],
    )


def subscribed(handset: Handset) -> Dialog:
    response, dialog, _ = handset.subscribe("call-info")
    assert response.status == 202, response
    handset.wait_notify(lambda n: n.event == "call-info" and n.call_id == dialog.call_id)
    return dialog


def forged(dialog: Dialog) -> Dialog:
    """A copy of someone else's subscription dialog, to send from another phone."""
    return attrs.evolve(dialog, route_set=list(dialog.route_set))


def test_members_use_their_dialogs_in_dialog_and_nobody_else_can(tmp_path: Path, db_url: str) -> None:
    add_subscribers(db_url, [(user, password) for user, password in PASSWORDS.items()])
    with running_server(tmp_path / "server", config(), db_url=db_url) as server:
        alice = phone("alice", server, "alice", contact_user="3000-0xa1")
        bob = phone("bob", server, "bob", contact_user="3000-0xb2")
        with handsets(alice, bob):
            alice_info, bob_info = subscribed(alice), subscribed(bob)
            # Refresh in dialog: the dialog is the authorisation, whatever the Contact user.
            response, _, sent = alice.subscribe("call-info", dialog=alice_info)
            assert response.status == 202, response
            assert "Authorization" not in sent.headers  # from its own flow: no challenge
            response, seize, _ = alice.subscribe("line-seize", expires=15, index=1)
            assert response.status == 200, response
            bob.wait_notify(state_is(1, "seized"))
            response, _, _ = alice.subscribe("line-seize", expires=15, index=1, dialog=seize)
            assert response.status == 200, response
            # Bob, authenticated, sends Alice's dialogs from his socket: refused every time.
            for event, dialog, expires, index in (
                ("call-info", alice_info, 3600, None),
                ("call-info", alice_info, 0, None),
                ("line-seize", seize, 15, 1),
                ("line-seize", seize, 0, 1),
            ):
                refused, _, request = bob.subscribe(
                    event, expires=expires, index=index, dialog=forged(dialog)
                )
                assert refused.status == 403, (event, expires, refused)
                assert "Authorization" in request.headers  # challenged first, then refused
            # An out-of-dialog release naming Alice's Contact and index releases nothing.
            fake = Handset(
                "fake", ("127.0.0.1", server.sip_port), line=LINE, username="bob", password="bob-secret"
            )
            fake.contact = alice.contact
            with handsets(fake):
                response, _, _ = fake.subscribe("line-seize", expires=0, index=1)
                assert response.status == 200, response
            assert [(a["index"], a["state"]) for a in appearances(server)] == [(1, "seized")]
            # Alice releases and unsubscribes in her dialogs.
            response, _, _ = alice.subscribe("line-seize", expires=0, index=1, dialog=seize)
            assert response.status == 200, response
            bob.wait_notify(all_idle)
            response, _, _ = alice.subscribe("call-info", expires=0, dialog=alice_info)
            assert response.status == 202, response
            alice.wait_notify(lambda n: n.call_id == alice_info.call_id and n.terminated)
            subs = rpc(server, "sca.all_subscriptions")
            assert [(s["event"], s["contact"]) for s in subs] == [("call-info", bob.contact)]
            response, _, _ = bob.subscribe("call-info", dialog=bob_info)
            assert response.status == 202, response


def test_call_info_of_a_user_is_for_that_user_only_and_the_refusal_discloses_nothing(
    tmp_path: Path, db_url: str
) -> None:
    add_subscribers(db_url, [(user, password) for user, password in PASSWORDS.items()])
    with running_server(tmp_path / "server", config(), db_url=db_url) as server:
        owner = Handset(
            "owner",
            ("127.0.0.1", server.sip_port),
            line=f"sip:carol@{DOMAIN}",
            username="carol",
            password=PASSWORDS["carol"],
        )
        with handsets(owner):
            subscribed(owner)  # carol's own AoR is hers: it exists now
            answers: list[tuple[int, str]] = []
            probes = [("alice", f"sip:carol@{DOMAIN}"), ("alice", f"sip:nobody@{DOMAIN}"), ("carol", LINE)]
            for user, target in probes:
                probe = Handset(
                    "probe",
                    ("127.0.0.1", server.sip_port),
                    line=f"sip:{user}@{DOMAIN}",  # From: the prober's own AoR, as a phone sends it
                    username=user,
                    password=PASSWORDS[user],
                )
                with handsets(probe):
                    for event, index in (("call-info", None), ("line-seize", 0)):
                        dialog = Dialog(uuid.uuid4().hex, new_tag(), None, probe.line, target, target)
                        refused, _, request = probe.subscribe(event, index=index, expires=15, dialog=dialog)
                        assert "Authorization" in request.headers
                        answers.append((refused.status, refused.reason))
            assert set(answers) == {(403, "Forbidden")}, answers
            subs = rpc(server, "sca.all_subscriptions")
            assert [s["contact"] for s in subs] == [owner.contact]


def test_two_phones_with_one_private_contact_keep_their_own_subscriptions_and_seizes(
    tmp_path: Path, db_url: str
) -> None:
    add_subscribers(db_url, [(user, password) for user, password in PASSWORDS.items()])
    with running_server(tmp_path / "server", config(), db_url=db_url) as server:
        one, two = phone("one", server, "2001"), phone("two", server, "2001")
        with handsets(one, two):
            for handset in (one, two):
                handset.contact = NAT_CONTACT  # both behind a NAT, the same private Contact
            dialogs = {handset.name: subscribed(handset) for handset in (one, two)}
            subs = rpc(server, "sca.all_subscriptions")
            assert sorted(s["call_id"] for s in subs) == sorted(d.call_id for d in dialogs.values())
            seizes = {}
            for handset, index in ((one, 1), (two, 2)):
                response, seizes[handset.name], _ = handset.subscribe("line-seize", expires=15, index=0)
                assert response.status == 200, response
                granted = handset.wait_notify(lambda n: n.event == "line-seize")
                assert granted.call_info == f"<sip:{DOMAIN}>;appearance-index={index}"
            for handset in (one, two):
                handset.wait_notify(lambda n: n.state_of(1) == "seized" and n.state_of(2) == "seized")
            response, _, _ = two.subscribe("line-seize", expires=0, index=2, dialog=seizes["two"])
            assert response.status == 200, response
            one.wait_notify(lambda n: n.state_of(1) == "seized" and n.state_of(2) is None)
            assert [(a["index"], a["state"]) for a in appearances(server)] == [(1, "seized")]
            for handset in (one, two):
                response, _, _ = handset.subscribe("call-info", dialog=dialogs[handset.name])
                assert response.status == 202, response


def _written(db_url: str) -> bool:
    """The write-behind queue wrote the subscription (with its flow: one row) and the seize."""
    store = SqlStore(db_url)
    try:
        return len(store.subscriptions.load_all()) == 1 and len(store.appearances.load_all()) == 1
    finally:
        store.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_notifies_reach_the_subscribers_flow_not_its_contact_after_a_restart(
    tmp_path: Path, db_url: str, stop: signal.Signals
) -> None:
    add_subscribers(db_url, [(user, password) for user, password in PASSWORDS.items()])
    first = running_server(tmp_path / "first", config(), db_url=db_url)
    server = first.__enter__()
    try:
        one = phone("one", server, "2001")
        with handsets(one):
            one.contact = NAT_CONTACT  # behind a NAT: its Contact is not where it can be reached
            dialog = subscribed(one)
            assert rpc(server, "sca.seize_appearance", LINE, NAT_CONTACT)["index"] == 1
            one.wait_notify(state_is(1, "seized"))
            eventually(lambda: _written(db_url), 5.0, "the subscription and the seize written")
            if stop == signal.SIGKILL:
                server.process.kill()
                server.process.wait(5)
            else:
                assert server.stop(signal.SIGTERM) == 0
            first.__exit__(None, None, None)
            count = len(one.notifies)
            with running_server(tmp_path / "second", config(), db_url=db_url) as again:
                one.server = ("127.0.0.1", again.sip_port)
                resync = one.wait_notify(lambda n: n.event == "call-info", after=count)
                assert resync.call_id == dialog.call_id
                assert resync.request.uri == NAT_CONTACT
                assert resync.state_of(1) == "seized"
                response, _, sent = one.subscribe("call-info", dialog=dialog)
                assert response.status == 202, response
                assert "Authorization" not in sent.headers  # the restored flow is its own
    finally:
        first.__exit__(None, None, None)


def test_member_rebooting_in_a_call_is_recognised_after_its_subscription_was_lost(
    tmp_path: Path, db_url: str
) -> None:
    add_subscribers(db_url, [(user, password) for user, password in PASSWORDS.items()])
    with running_server(tmp_path / "server", config(t1=0.05), db_url=db_url) as server:
        alice = phone("alice", server, "alice", contact_user="3000-0xa1")
        bob = phone("bob", server, "bob")
        with handsets(alice, bob):
            subscribed(alice)
            subscribed(bob)
            assert rpc(server, "sca.seize_appearance", LINE, alice.contact)["index"] == 1
            rpc(server, "sca.update_appearance", LINE, 1, "active", f"<sip:callee@{DOMAIN}>")
            bob.wait_notify(state_is(1, "active"))
            alice.mute()  # rebooting: the next NOTIFY times out and the subscription goes
            rpc(server, "sca.update_appearance", LINE, 1, "held")
            bob.wait_notify(state_is(1, "held"))
            eventually(
                lambda: [s["contact"] for s in rpc(server, "sca.all_subscriptions")] == [bob.contact],
                10.0,
                "alice's subscription removed after the NOTIFY timed out",
            )
            assert [(a["index"], a["state"]) for a in appearances(server)] == [(1, "held")]
            alice.answer_notifies = True  # back up, it subscribes anew
            response, _, _ = alice.subscribe("call-info")
            assert response.status == 202, response
            bob.wait_notify(all_idle)
            assert appearances(server) == []


def seed_restored(db_url: str, port: int, count: int) -> None:
    """``count`` stored call-info subscriptions to LINE whose subscriber is 127.0.0.1:``port``."""
    add_subscribers(db_url, [])
    expires = time.time() + 3600
    store = SqlStore(db_url)
    try:
        store.subscriptions.upsert(
            [
                Subscription(
                    subscriber=f"sip:m{n}@127.0.0.1:{port}",
                    aor=LINE,
                    event=Package.CALL_INFO,
                    expires=expires,
                    call_id=f"restored-{n}",
                    from_tag=f"f{n}",
                    to_tag=f"t{n}",
                    peer=Peer(Transport.UDP, "127.0.0.1", port),
                )
                for n in range(count)
            ]
        )
    finally:
        store.close()


def full_state_call_id(data: bytes) -> str:
    request = parse_message(data)
    assert isinstance(request, Request) and request.method == "NOTIFY"
    assert (request.headers.get("Subscription-State") or "").startswith("active")
    return request.headers.get("Call-ID") or ""


def test_a_restore_of_more_than_one_batch_sends_every_subscription_its_full_state(
    tmp_path: Path, db_url: str
) -> None:
    """The full-state NOTIFYs of a restore go out a batch per reactor turn: all of them."""
    count = 2 * RESTORE_NOTIFY_BATCH + 50  # three turns
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.5)
    seed_restored(db_url, sink.getsockname()[1], count)
    notified: set[str] = set()
    with sink, running_server(tmp_path / "server", config(), db_url=db_url):
        deadline = time.monotonic() + 60.0
        while len(notified) < count and time.monotonic() < deadline:
            try:
                data, _ = sink.recvfrom(65536)
            except TimeoutError:
                continue
            notified.add(full_state_call_id(data))
    assert notified == {f"restored-{n}" for n in range(count)}


def test_a_restore_sends_no_more_unanswered_notifies_than_its_window_at_once(
    tmp_path: Path, db_url: str
) -> None:
    """The restore's NOTIFYs wait while RESTORE_NOTIFY_WINDOW transactions are in progress:
    to subscribers that do not answer (gone since the restart), a batch more goes only every
    MAX_WAIT_S, and all of them still go."""
    count = 2 * RESTORE_NOTIFY_WINDOW
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sink.settimeout(0.5)
    seed_restored(db_url, sink.getsockname()[1], count)
    notified: set[str] = set()
    within_first_second: int | None = None
    with sink, running_server(tmp_path / "server", config(), db_url=db_url):
        first: float | None = None
        deadline = time.monotonic() + 90.0
        while len(notified) < count and time.monotonic() < deadline:
            try:
                data, _ = sink.recvfrom(65536)  # and never answered
            except TimeoutError:
                continue
            first = first if first is not None else time.monotonic()
            if within_first_second is None and time.monotonic() - first > 1.0:
                within_first_second = len(notified)
            notified.add(full_state_call_id(data))
    # Unbounded, all 2000 go within a few turns; bounded, the window and at most a batch per
    # MAX_WAIT_S (and one batch under way).
    assert within_first_second is not None
    assert within_first_second <= RESTORE_NOTIFY_WINDOW + RESTORE_NOTIFY_BATCH * (1.0 / MAX_WAIT_S + 1)
    assert notified == {f"restored-{n}" for n in range(count)}
