"""NOTIFY fan-out latency: time from a line-seize SUBSCRIBE to the last member's NOTIFY.

The probe is the ``members`` phones of one shared line ``sip:USER@127.0.0.1``: each holds a
``call-info`` subscription (Contact ``;member=TAG`` on the probe's socket).  For each sample
member ``a`` seizes an appearance (line-seize SUBSCRIBE, Expires 15); the latency is from
just before the SUBSCRIBE is sent to the kernel receive time of the last member's call-info
NOTIFY showing ``appearance-state=seized`` (sca.md sections 3.7 and 4.1).  Then the seize is
released (in-dialog SUBSCRIBE, Expires 0) and the probe waits for every member's idle
NOTIFY before the next sample.  Every NOTIFY is answered with 200.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import attrs

from bench.gen_aors import member_tag
from bench.sippstep import percentile
from bench.sipua import HOST, Endpoint, SipMessage, ok_response, request

WAIT_S = 2.0


@attrs.frozen
class FanOut:
    members: int
    samples: list[float]
    failures: int

    def as_json(self) -> dict[str, object]:
        return {
            "members": self.members,
            "n": len(self.samples),
            "failures": self.failures,
            "p50_ms": round(percentile(self.samples, 0.5), 3),
            "p99_ms": round(percentile(self.samples, 0.99), 3),
            "max_ms": round(max(self.samples), 3) if self.samples else float("nan"),
        }


class LineProbe:
    def __init__(self, server: tuple[str, int], user: str, members: int) -> None:
        self.server, self.members = server, members
        self.endpoint = Endpoint()
        self.aor = f"sip:{user}@{HOST}"
        self.user = user
        self.dialogs: dict[str, str] = {}  # call-info Call-ID -> member tag
        self.seen: set[tuple[str, int]] = set()

    def contact(self, tag: str) -> str:
        return f"sip:{self.user}@{HOST}:{self.endpoint.port};member={tag}"

    def close(self) -> None:
        self.endpoint.close()

    def _send(self, data: bytes) -> None:
        self.endpoint.send(data, self.server)

    def _pump(self, timeout: float) -> list[SipMessage]:
        """Messages arriving within ``timeout``; NOTIFYs answered, retransmissions dropped."""
        out: list[SipMessage] = []
        for message, address in self.endpoint.receive(timeout):
            if message.is_request:
                if message.method != "ACK":
                    self.endpoint.send(ok_response(message), address)
                key = (message.call_id, message.cseq[0])
                if key in self.seen:
                    continue
                self.seen.add(key)
            out.append(message)
        return out

    def subscribe_members(self, stamp: str) -> bool:
        """Every member subscribes to call-info; True when all got a 2xx."""
        pending: dict[str, bytes] = {}
        for n in range(self.members):
            tag = member_tag(n)
            call_id = f"ci-{stamp}-{self.user}-{tag}@bench"
            self.dialogs[call_id] = tag
            pending[call_id] = request(
                "SUBSCRIBE",
                self.aor,
                local_port=self.endpoint.port,
                from_uri=self.aor,
                from_tag=f"f{tag}",
                to_uri=self.aor,
                call_id=call_id,
                cseq=1,
                contact=self.contact(tag),
                extra=("Event: call-info", "Expires: 600"),
            )
        for data in pending.values():
            self._send(data)
        deadline = time.monotonic() + 5.0
        retry = time.monotonic() + 0.5
        while pending and time.monotonic() < deadline:
            for message in self._pump(0.1):
                if not message.is_request and message.status >= 200 and message.call_id in pending:
                    if message.status >= 300:
                        return False
                    del pending[message.call_id]
            if time.monotonic() > retry:
                for data in pending.values():
                    self._send(data)
                retry = time.monotonic() + 0.5
        self._pump(0.3)
        return not pending

    def _await_members(self, state: str, deadline: float, latest: float) -> tuple[bool, float]:
        """Wait until every member's call-info NOTIFY matches ``state``; the last arrival time."""
        waiting = set(self.dialogs)
        last = latest
        while waiting and time.monotonic() < deadline:
            for message in self._pump(0.05):
                if message.method != "NOTIFY" or message.call_id not in waiting:
                    continue
                info = message.header("call-info")
                seized = "appearance-state=seized" in info
                if (state == "seized") == seized:
                    waiting.discard(message.call_id)
                    last = max(last, message.arrived)
        return not waiting, last

    def paced(self, samples: int, pace_s: float) -> Iterator[tuple[float, float | None]]:
        """``samples`` samples, one every ``pace_s`` at most (0.3 s more after a failed one,
        whose answers are let drain): the wall clock each began at, and its latency in ms
        (None when it failed)."""
        for n in range(samples):
            began, wall = time.monotonic(), time.time()
            value = self.sample(n)
            if value is None:
                self._pump(0.3)
            yield wall, value
            rest = pace_s - (time.monotonic() - began)
            if rest > 0:
                self._pump(rest)

    def sample(self, n: int) -> float | None:
        """One seize (measured) and release; the latency in ms, or None when it failed."""
        tag = member_tag(0)
        call_id = f"ls-{self.user}-{n}-{time.time_ns()}@bench"

        def seize(cseq: int, expires: int, to_tag: str, index: str) -> bytes:
            return request(
                "SUBSCRIBE",
                self.aor,
                local_port=self.endpoint.port,
                from_uri=self.aor,
                from_tag=f"s{n}",
                to_uri=self.aor,
                to_tag=to_tag,
                call_id=call_id,
                cseq=cseq,
                contact=self.contact(tag),
                extra=(
                    "Event: line-seize",
                    f"Expires: {expires}",
                    f"Call-Info: <{self.aor}>;appearance-index={index}",
                ),
            )

        started = time.time()
        self._send(seize(1, 15, "", "0"))
        deadline = time.monotonic() + WAIT_S
        to_tag, index = "", ""
        waiting = set(self.dialogs)
        last = started
        while (waiting or not to_tag or not index) and time.monotonic() < deadline:
            for message in self._pump(0.05):
                if message.call_id == call_id:
                    if not message.is_request and message.status >= 200:
                        if message.status >= 300:
                            return None
                        to_tag = message.tag("to")
                    elif message.method == "NOTIFY":
                        info = message.header("call-info")
                        index = info.split("appearance-index=", 1)[-1].split(";", 1)[0].strip()
                elif (
                    message.method == "NOTIFY"
                    and message.call_id in waiting
                    and "appearance-state=seized" in message.header("call-info")
                ):
                    waiting.discard(message.call_id)
                    last = max(last, message.arrived)
        if waiting or not to_tag or not index:
            return None
        latency = (last - started) * 1000.0
        self._send(seize(2, 0, to_tag, index))
        done, _ = self._await_members("idle", time.monotonic() + WAIT_S, 0.0)
        return latency if done else None


def measure(server: tuple[str, int], user: str, members: int, samples: int, pace_s: float) -> FanOut:
    probe = LineProbe(server, user, members)
    try:
        if not probe.subscribe_members(str(time.time_ns())):
            return FanOut(members, [], samples)
        values: list[float] = []
        failures = 0
        for _, value in probe.paced(samples, pace_s):
            if value is None:
                failures += 1
            else:
                values.append(value)
        return FanOut(members, values, failures)
    finally:
        probe.close()
