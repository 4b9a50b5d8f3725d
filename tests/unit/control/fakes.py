"""In-memory implementations of the control seams, recording what they were asked to do."""

from __future__ import annotations

import json
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from jsonschema import Draft202012Validator

from scaserver.control.catalogue import build_registry
from scaserver.control.dispatcher import AuditRecord, Dispatcher, DispatchOptions
from scaserver.control.jsonrpc import JsonValue
from scaserver.control.registry import Caller, Registry, Scope
from scaserver.control.seams import (
    AorRecord,
    AppearanceChange,
    AppearanceInfo,
    AppearanceRefusal,
    AppearanceStateName,
    ContactInfo,
    ContactRemoval,
    Deactivation,
    LineInfo,
    PushInfo,
    ScaEvent,
    SubscriptionInfo,
)
from scaserver.control.system import ServerInfo

NOW = 1_732_450_000.0
LINE = "sip:2001@pbx.example.com"
CATALOGUE = Path(__file__).resolve().parents[3] / "rpc" / "openrpc.json"

SUB_A = SubscriptionInfo(
    aor=LINE,
    event=ScaEvent.CALL_INFO,
    subscriber="sip:2001@pbx.example.com",
    contact="sip:2001@10.0.1.2:5060",
    state="active",
    expires_at=NOW + 3412,
    call_id="c1@10.0.1.2",
    from_tag="ft1",
    to_tag="tt1",
    notify_cseq=3,
    subscribe_cseq=7,
)
SUB_B = attrs.evolve(
    SUB_A, event=ScaEvent.LINE_SEIZE, contact="sip:2001@10.0.1.3", appearance_index=2, call_id="c2"
)
SUB_C = attrs.evolve(SUB_A, contact="sip:2001@10.0.1.3")
APP_1 = AppearanceInfo(
    aor=LINE,
    index=1,
    state=AppearanceStateName.ACTIVE,
    owner="sip:2001@10.0.1.2:5060",
    callee="sip:+15551234@carrier.example",
    appearance_uri="sip:+15551234@carrier.example",
    call_id="a84b4c76e66710@10.0.1.2",
    member_tag="1928301774",
    remote_tag="as6151ad25",
    role="caller",
    ctime=NOW - 60,
    mtime=NOW - 30,
)
CONTACT = ContactInfo(
    address="sip:2001@10.0.1.2:5060",
    expires_at=NOW + 533,
    call_id="reg1@10.0.1.2",
    cseq=12,
    q=0.5,
    user_agent="PolycomVVX-VVX_411-UA/6.3.0",
    received="udp:10.0.1.2:5060",
    push=PushInfo(provider="apns", prid_sha256="ab" * 32, param="team.voip"),
)
RECORD = AorRecord(aor="2001@pbx.example.com", contacts=(CONTACT, attrs.evolve(CONTACT, expires_at=None)))


@attrs.define
class FakeSca:
    subscriptions: list[SubscriptionInfo] = attrs.Factory(lambda: [SUB_A, SUB_B, SUB_C])
    appearances: list[AppearanceInfo] = attrs.Factory(lambda: [APP_1])
    max_appearances: int = 2
    notify_failed: tuple[str, ...] = ()
    seize_refusal: AppearanceRefusal | None = None
    calls: list[tuple[str, tuple[object, ...]]] = attrs.Factory(list)
    written: int = 4
    broken: Exception | None = None  # raised by subscription_count, to test the -32603 path

    def all_subscriptions(self) -> Sequence[SubscriptionInfo]:
        return list(self.subscriptions)

    def subscription_count(self, event: ScaEvent) -> int:
        if self.broken is not None:
            raise self.broken
        return sum(1 for sub in self.subscriptions if sub.event is event)

    def show_subscription(self, aor: str, event: ScaEvent, contact: str | None) -> Sequence[SubscriptionInfo]:
        return [
            sub
            for sub in self.subscriptions
            if sub.aor == aor and sub.event is event and contact in (None, sub.contact)
        ]

    def all_appearances(self) -> Sequence[AppearanceInfo]:
        return list(self.appearances)

    def show_appearance(self, aor: str) -> LineInfo | None:
        if aor != LINE:
            return None
        used = {app.index: app for app in self.appearances}
        slots = tuple(
            used.get(index, AppearanceInfo(aor=aor, index=index, state=AppearanceStateName.IDLE))
            for index in range(1, self.max_appearances + 1)
        )
        return LineInfo(aor=aor, max_appearances=self.max_appearances, appearances=slots)

    async def deactivate_all_subscriptions(self) -> Deactivation:
        self.calls.append(("deactivate_all", ()))
        ended, self.subscriptions = tuple(self.subscriptions), []
        return Deactivation(ended, self.notify_failed)

    async def deactivate_subscription(self, aor: str, event: ScaEvent, contact: str) -> Deactivation | None:
        self.calls.append(("deactivate", (aor, event, contact)))
        found = self.show_subscription(aor, event, contact)
        if not found:
            return None
        self.subscriptions.remove(found[0])
        return Deactivation((found[0],), self.notify_failed)

    async def seize_appearance(self, aor: str, owner: str) -> AppearanceChange | AppearanceRefusal:
        self.calls.append(("seize", (aor, owner)))
        if self.seize_refusal is not None:
            return self.seize_refusal
        used = {app.index for app in self.appearances if app.aor == aor}
        index = min(set(range(1, self.max_appearances + 2)) - used)
        if index > self.max_appearances:
            return AppearanceRefusal.NO_FREE_INDEX
        app = AppearanceInfo(
            aor=aor, index=index, state=AppearanceStateName.SEIZED, owner=owner, ctime=NOW, mtime=NOW
        )
        self.appearances.append(app)
        return AppearanceChange(app, self.notify_failed)

    def _find(self, aor: str, index: int) -> AppearanceInfo | AppearanceRefusal:
        if aor != LINE:
            return AppearanceRefusal.NO_LINE
        for app in self.appearances:
            if app.index == index:
                return app
        return AppearanceRefusal.NOT_IN_USE

    async def update_appearance(
        self, aor: str, index: int, state: AppearanceStateName, appearance_uri: str | None
    ) -> AppearanceChange | AppearanceRefusal:
        self.calls.append(("update", (aor, index, state, appearance_uri)))
        found = self._find(aor, index)
        if isinstance(found, AppearanceRefusal):
            return found
        changed = attrs.evolve(
            found, state=state, appearance_uri=appearance_uri or found.appearance_uri, mtime=NOW
        )
        self.appearances[self.appearances.index(found)] = changed
        return AppearanceChange(changed, self.notify_failed)

    async def release_appearance(self, aor: str, index: int) -> AppearanceChange | AppearanceRefusal:
        self.calls.append(("release", (aor, index)))
        found = self._find(aor, index)
        if isinstance(found, AppearanceRefusal):
            return found
        self.appearances.remove(found)
        return AppearanceChange(AppearanceInfo(aor=aor, index=index, state=AppearanceStateName.IDLE), ())

    async def flush(self) -> int:
        self.calls.append(("flush", ()))
        return self.written


@attrs.define
class FakeLocation:
    records: list[AorRecord] = attrs.Factory(lambda: [RECORD])
    calls: list[tuple[str, tuple[object, ...]]] = attrs.Factory(list)

    def dump(self) -> Sequence[AorRecord]:
        return list(self.records)

    def lookup(self, aor: str) -> AorRecord | None:
        return next((record for record in self.records if record.aor == aor), None)

    async def rm(self, aor: str) -> bool:
        self.calls.append(("rm", (aor,)))
        record = self.lookup(aor)
        if record is None:
            return False
        self.records.remove(record)
        return True

    async def rm_contact(self, aor: str, contact: str) -> ContactRemoval:
        self.calls.append(("rm_contact", (aor, contact)))
        record = self.lookup(aor)
        if record is None:
            return ContactRemoval.NO_AOR
        kept = tuple(item for item in record.contacts if item.address != contact)
        if len(kept) == len(record.contacts):
            return ContactRemoval.NO_CONTACT
        self.records[self.records.index(record)] = attrs.evolve(record, contacts=kept)
        return ContactRemoval.REMOVED

    async def flush(self) -> None:
        self.calls.append(("flush", ()))


SERVER = ServerInfo(
    version="scaserver 0.1.0 (CPython 3.11.7, Twisted 26.10.0)",
    pid=4242,
    listen=("udp:127.0.0.1:5060",),
    db="sqlite",
    started_at=NOW - 100,
)


@attrs.define
class Rig:
    """A full registry over the fakes with a dispatcher that records audits and failures."""

    sca: FakeSca = attrs.Factory(FakeSca)
    location: FakeLocation = attrs.Factory(FakeLocation)
    audits: list[AuditRecord] = attrs.Factory(list)
    failures: list[tuple[str, BaseException]] = attrs.Factory(list)
    options: DispatchOptions = attrs.Factory(DispatchOptions)
    registry: Registry = attrs.field(init=False)
    dispatcher: Dispatcher = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.registry = build_registry(sca=self.sca, location=self.location, server=SERVER, clock=lambda: NOW)
        self.dispatcher = Dispatcher(
            self.registry,
            clock=lambda: NOW,
            audit=self.audits.append,
            on_failure=lambda method, error: self.failures.append((method, error)),
            options=self.options,
        )


ADMIN = Caller(peer="127.0.0.1:40000", scope=Scope.ADMIN, transport="http")
READER = Caller(peer="127.0.0.1:40001", scope=Scope.READ, transport="http")


def load_catalogue() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    return document


def check_result(method: str, result: JsonValue) -> None:
    """Validate ``result`` against the catalogue (raises jsonschema.ValidationError)."""
    validator = _validator(method)
    validator.validate(result)


def _validator(method: str) -> Any:
    """The method's result schema with the catalogue's component schemas as ``$defs``."""
    document = load_catalogue()
    schema = next(entry["result"]["schema"] for entry in document["methods"] if entry["name"] == method)
    rewritten = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
    defs = json.loads(
        json.dumps(document["components"]["schemas"]).replace("#/components/schemas/", "#/$defs/")
    )
    return Draft202012Validator({**rewritten, "$defs": defs})


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (the fakes never wait) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise AssertionError("coroutine suspended")


def call(
    rig: Rig, method: str, params: JsonValue = None, *, caller: Caller = ADMIN, request_id: int = 1
) -> tuple[int, dict[str, Any]]:
    """One request through the dispatcher: (HTTP status, decoded reply envelope)."""
    request: dict[str, JsonValue] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        request["params"] = params
    reply = run(rig.dispatcher.dispatch(json.dumps(request).encode(), caller))
    assert reply.body is not None
    envelope: dict[str, Any] = json.loads(reply.body)
    return reply.http_status, envelope


def result_of(rig: Rig, method: str, params: JsonValue = None, *, caller: Caller = ADMIN) -> Any:
    """The result of a successful call, checked against the catalogue's result schema."""
    status, envelope = call(rig, method, params, caller=caller)
    assert status == 200, envelope
    assert "error" not in envelope, envelope
    check_result(method, envelope["result"])
    return envelope["result"]


def fault_of(
    rig: Rig, method: str, params: JsonValue = None, *, caller: Caller = ADMIN
) -> tuple[int, int, str]:
    """(HTTP status, error code, error message) of a failing call."""
    status, envelope = call(rig, method, params, caller=caller)
    error = envelope["error"]
    return status, error["code"], error["message"]
