"""Call rows (``calls``) and accounting rows (``acc``) from the proxy's facts (reporting.md
sections 4.1 and 4.2), for :class:`~scaserver.reporting.history.HistoryRecorder`.

It keeps the little per-call state a CDR needs: start, first ring, answer, end, the caller's
cancel, the line and appearance index and the pickup hand-off.

Call rows (``calls``, section 4.1):

* A call starts when the proxy forwards the first branch of an initial INVITE; further
  branches of the same Call-ID are the same call.  A call the proxy never forwards (rejected
  or challenged before any branch) has no row.  ``call_uuid`` is a UUID-5 of (Call-ID,
  From-tag), so a repeated fact rewrites the same row (section 3 rule 6).
* Direction and line: a call to a shared line (To or Request-URI AoR is a line) is
  ``inbound`` on that line; otherwise a call from a line is ``outbound`` on it; otherwise
  the caller's and callee's domains decide (both local: ``internal``; caller local:
  ``outbound``; else ``inbound``).
* ``ring_ms`` at the first 180/183 relayed upstream, ``answer_ms`` at the first 2xx.
* The end comes with the proxy's ``CallEnded``: a BYE gives ``ANSWERED``/``bye``; a failed
  initial INVITE gives its disposition by status (:func:`failure_outcome`).  A 401/407 is not
  an end: the caller re-sends the INVITE with credentials in the same Call-ID, which reopens
  the row.
* A pickup from hold (sca.md section 7.1: an initial INVITE carrying ``Replaces``, or the
  7.1 shape naming a held appearance) continues the held call on a new dialog: it is not a
  new call.  The old dialog's BYE does not end the call once the pickup is answered (nor
  while it is pending, since Polycom phones send it before the new leg's 200); a failed
  pickup leaves the call on its old dialog.
* ``hold_count``/``held_ms`` sum the intervals the call's appearance spent in ``held`` or
  ``held-private`` (an interval still open at the end is closed there).
"""

from __future__ import annotations

import hashlib
import operator
import uuid
from collections.abc import Callable
from typing import Final, TypeAlias, TypedDict, Unpack

import attrs

from scaserver.proxy.events import (
    CallCancelled,
    CallEnded,
    CallEndReason,
    RequestForwarded,
    ResponseRelayed,
)
from scaserver.reporting.rows import RowSequence, epoch_ms
from scaserver.sca.callinfo import CallInfo, CallInfoError
from scaserver.sip.errors import MalformedMessage
from scaserver.sip.headers import contacts, parse_cseq, top_via
from scaserver.sip.message import Request, Response
from scaserver.sip.uri import NameAddr, SipUri, Uri, parse_name_addr, parse_uri
from scaserver.store.history import (
    AccRecord,
    CallRecord,
    Direction,
    Disposition,
    EndReason,
    HistoryRow,
)

#: Namespace of the UUID-5 call identifiers (fixed: the same call always gets the same UUID).
CALL_UUID_NAMESPACE: Final = uuid.UUID("6f1c0d5e-3b2a-5c59-9a51-2f4f0c8a7e10")

_NAMESPACE_BYTES: Final = CALL_UUID_NAMESPACE.bytes

#: How long a challenged (401/407) call waits for its authenticated INVITE before it is dropped.
CHALLENGE_GRACE_S: Final = 60.0


def call_uuid(call_id: str, from_tag: str) -> str:
    """The ``call_uuid`` of the call with this Call-ID and caller tag: ``uuid5`` of both, with
    octets that were not UTF-8 (surrogate escapes) hashed too instead of failing."""
    name = f"{call_id}\n{from_tag}".encode("utf-8", "surrogatepass")
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    # What uuid.UUID(bytes=digest, version=5) sets, and its str, without the UUID object.
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def failure_outcome(status: int, *, cancelled: bool) -> tuple[Disposition, EndReason]:
    """Disposition and end reason of an initial INVITE that ended with final ``status`` >= 300.

    Asterisk's vocabulary (section 2.2), with "caller hung up" kept apart from "nobody
    answered" (section 2.3): a caller's CANCEL is ``NO ANSWER``/``caller_cancel``;
    486/600/603 are ``BUSY``; 408/480 (ring time-out, nobody available) ``NO ANSWER``/
    ``ring_timeout``; 503 ``CONGESTION``; other 5xx ``FAILED``/``error``; the rest
    (3xx, 4xx, 6xx) ``FAILED``/``rejected``.
    """
    if cancelled or status == 487:
        return Disposition.NO_ANSWER, EndReason.CALLER_CANCEL
    if status in (486, 600, 603):
        return Disposition.BUSY, EndReason.REJECTED
    if status in (408, 480):
        return Disposition.NO_ANSWER, EndReason.RING_TIMEOUT
    if status == 503:
        return Disposition.CONGESTION, EndReason.ERROR
    if 500 <= status < 600:
        return Disposition.FAILED, EndReason.ERROR
    return Disposition.FAILED, EndReason.REJECTED


class CallChanges(TypedDict, total=False):
    """The ``calls`` columns the recorder changes as a call goes on (:func:`updated`)."""

    to_tag: str
    line_aor: str | None
    appearance_index: int | None
    answered_contact: str | None
    answered_device: str | None
    ring_ms: int | None
    answer_ms: int | None
    duration_ms: int | None
    billable_ms: int | None
    ended_ms: int | None
    disposition: Disposition
    end_reason: EndReason | None
    final_sip_code: int | None
    final_sip_reason: str | None
    hold_count: int
    held_ms: int
    parked: bool


_CALL_FIELDS: Final = tuple(field.name for field in attrs.fields(CallRecord))
_call_values: Final = operator.attrgetter(*_CALL_FIELDS)
_CALL_POSITION: Final = {name: position for position, name in enumerate(_CALL_FIELDS)}


def updated(record: CallRecord, **changes: Unpack[CallChanges]) -> CallRecord:
    """``attrs.evolve(record, **changes)``, the record's values read at once and passed by
    position: about half of ``evolve``'s cost on the 26 columns (5 updates a call)."""
    values = list(_call_values(record))
    for name, value in changes.items():
        values[_CALL_POSITION[name]] = value
    return CallRecord(*values)


def _aor(uri: Uri) -> str:
    return uri.aor() if isinstance(uri, SipUri) else str(uri)


def _user_host(uri: Uri) -> tuple[str, str]:
    if isinstance(uri, SipUri):
        return (uri.user or "", uri.host)
    return ("", "")


def _domain(aor: str) -> str:
    return aor.rpartition("@")[2].split(":", 1)[0].lower()


@attrs.define
class Call:
    """What the recorder knows of one call while it lasts (its legs are its Call-IDs)."""

    record: CallRecord
    started: float
    answered: float | None = None
    cancelled: bool = False
    challenged_at: float | None = None
    current_call_id: str = ""
    pickup_call_id: str | None = None
    old_leg_ended: float | None = None
    call_ids: set[str] = attrs.Factory(set)


HeldCall = Callable[[str, int], "Call | None"]
"""The call held on a line's appearance (line, index), which a pickup continues (sca.md 7.1)."""

CallClosed = Callable[["Call", int], None]
"""Told that a call ended at the given epoch milliseconds (its appearances let go of it)."""


class CallHistory:
    """The ``calls`` and ``acc`` rows of the proxy's facts.

    ``line_of`` gives the shared line an AoR belongs to; ``local_domains`` decide the direction
    of calls not involving a line; ``device_of`` names the device behind a contact;
    ``held_call`` and ``closed`` link calls to appearances; ``parked`` says whether a Call-ID
    is a parked call's (its first branch is an appended one).
    """

    def __init__(
        self,
        *,
        line_of: Callable[[str], str | None],
        local_domains: frozenset[str],
        device_of: Callable[[str], str | None] | None,
        sequence: RowSequence,
        held_call: HeldCall,
        closed: CallClosed,
        parked: Callable[[str], bool],
        calls: dict[str, Call] | None = None,
    ) -> None:
        """``device_of`` None: no device is known; ``calls``: the table of calls by Call-ID
        to keep (shared with the appearance history, which reads it)."""
        self._line_of, self._local_domains, self._device_of = line_of, local_domains, device_of
        self._sequence = sequence
        self._held_call, self._closed, self._parked = held_call, closed, parked
        self._calls: dict[str, Call] = {} if calls is None else calls
        # The parties of the last request seen (:meth:`_parties`): the proxy hands the same
        # request object to its branch and to each response relayed for it.
        self._last: _Parties | None = None
        # The calls challenged (401/407) and not reopened, by identity: a new INVITE scans
        # ``_calls`` for stale ones only when one of these is stale, not at every call.
        self._challenged: dict[int, Call] = {}

    def get(self, call_id: str) -> Call | None:
        """The call a Call-ID belongs to (a challenged one included)."""
        return self._calls.get(call_id)

    @property
    def in_progress(self) -> int:
        """Calls started and not yet ended."""
        return len({id(call) for call in self._calls.values() if call.challenged_at is None})

    def cancelled(self, fact: CallCancelled) -> None:
        call = self._calls.get(fact.request.call_id or "")
        if call is not None and fact.request.call_id == call.current_call_id:
            call.cancelled = True

    def _parties(self, request: Request) -> _Parties:
        """The Call-ID, From and To of ``request`` (None: missing or malformed), read in one
        pass over its header lines and kept for the next fact about the same request."""
        last = self._last
        if last is not None and last[0] is request:
            return last
        call_id = from_text = to_text = None
        for name, value in request.headers.fields:
            if name == "Call-ID":
                if call_id is None:
                    call_id = value
            elif name == "From":
                if from_text is None:
                    from_text = value
            elif name == "To":
                if to_text is None:
                    to_text = value
            else:
                continue
            if call_id is not None and from_text is not None and to_text is not None:
                break
        last = self._last = (request, call_id, _name_addr(from_text), _name_addr(to_text))
        return last

    def forwarded(self, fact: RequestForwarded) -> list[HistoryRow]:
        request = fact.request
        if request.method != "INVITE":
            return []
        _, call_id, caller, callee = self._parties(request)
        if not call_id or caller is None or callee is None:
            return []
        if callee.tag is not None or caller.tag is None:
            return []  # re-INVITEs are the appearance's business, not the CDR's
        if self._challenged:  # else no challenged call can be stale
            self._drop_stale_challenges(fact.now)
        existing = self._calls.get(call_id)
        if existing is not None:
            if existing.challenged_at is None:
                return []  # another branch of a call already recorded
            return self._reopen(existing)
        # Each party's AoR and line, found once for the pickup test and the new row.
        caller_aor, callee_aor = _aor(caller.uri), _aor(callee.uri)
        caller_line, callee_line = self._line_of(caller_aor), self._line_of(callee_aor)
        replaced = self._replaced_call(request, fact.forwarded, caller_line, callee_line)
        if replaced is not None:
            replaced.pickup_call_id = call_id
            replaced.call_ids.add(call_id)
            self._calls[call_id] = replaced
            return []
        record = self._new_record(
            request,
            call_id,
            caller=caller,
            caller_aor_line=(caller_aor, caller_line),
            callee_aor_line=(callee_aor, callee_line),
            now=fact.now,
        )
        if self._parked(call_id):  # the first branch of a parked call is an appended one
            record = updated(record, parked=True)
        call = Call(record, fact.now, current_call_id=call_id, call_ids={call_id})
        self._calls[call_id] = call
        return [record]

    def _new_record(
        self,
        request: Request,
        call_id: str,
        *,
        caller: NameAddr,
        caller_aor_line: tuple[str, str | None],
        callee_aor_line: tuple[str, str | None],
        now: float,
    ) -> CallRecord:
        """The first row of a call; each party is given with its AoR and its line."""
        (caller_aor, caller_line), (callee_aor, callee_line) = caller_aor_line, callee_aor_line
        if callee_line is None:
            callee_line = self._line_of(_ruri_aor(request))
        if callee_line is not None:
            direction, line = Direction.INBOUND, callee_line
        elif caller_line is not None:
            direction, line = Direction.OUTBOUND, caller_line
        else:
            caller_local = _domain(caller_aor) in self._local_domains
            callee_local = _domain(callee_aor) in self._local_domains
            line = None
            if caller_local and callee_local:
                direction = Direction.INTERNAL
            elif caller_local:
                direction = Direction.OUTBOUND
            else:
                direction = Direction.INBOUND
        contact = _first_contact(request)
        device_of = self._device_of
        return CallRecord(
            call_uuid=call_uuid(call_id, caller.tag or ""),
            sip_call_id=call_id,
            from_tag=caller.tag or "",
            to_tag="",
            direction=direction,
            line_aor=line,
            appearance_index=None,
            caller_uri=caller_aor,
            caller_display=caller.display_name,
            callee_uri=callee_aor,
            origin_device=None if contact is None or device_of is None else device_of(contact),
            answered_contact=None,
            answered_device=None,
            started_ms=epoch_ms(now),
        )

    def _reopen(self, call: Call) -> list[HistoryRow]:
        call.challenged_at = None
        self._challenged.pop(id(call), None)
        call.record = updated(
            call.record,
            disposition=Disposition.IN_PROGRESS,
            end_reason=None,
            ended_ms=None,
            duration_ms=None,
            billable_ms=None,
            final_sip_code=None,
            final_sip_reason=None,
        )
        return [call.record]

    def _drop_stale_challenges(self, now: float) -> None:
        challenged = self._challenged
        if not any(
            call.challenged_at is None or now - call.challenged_at > CHALLENGE_GRACE_S
            for call in challenged.values()
        ):
            return  # no stale challenged call: the scan below would find nothing
        for key, call in list(challenged.items()):
            if call.challenged_at is None or now - call.challenged_at > CHALLENGE_GRACE_S:
                del challenged[key]
        stale = [
            call_id
            for call_id, call in self._calls.items()
            if call.challenged_at is not None and now - call.challenged_at > CHALLENGE_GRACE_S
        ]
        for call_id in stale:
            del self._calls[call_id]

    def _replaced_call(
        self, request: Request, forwarded: Request, caller_line: str | None, callee_line: str | None
    ) -> Call | None:
        """The call a pickup INVITE continues (sca.md 7.1), or None for a new call; the lines
        are the caller's and the callee's."""
        replaces = forwarded.headers.get("Replaces") or request.headers.get("Replaces")
        if replaces:
            old = self._calls.get(replaces.split(";", 1)[0].strip())
            if old is not None and old.challenged_at is None:
                return old
        line = caller_line
        if line is None or line != callee_line:
            return None
        try:
            info = CallInfo.of(request.headers).first()
        except CallInfoError:
            return None
        if info is None or info.index is None:
            return None
        return self._held_call(line, info.index)

    def relayed(self, fact: ResponseRelayed) -> list[HistoryRow]:
        request, response = fact.request, fact.response
        _, found_call_id, caller, callee = self._parties(request)
        call_id = found_call_id or ""
        call = self._calls.get(call_id)
        cseq_text = response.headers.get("CSeq")
        if cseq_text is None or callee is None:
            return []
        try:
            method = parse_cseq(cseq_text).method
        except MalformedMessage:
            return []
        initial = callee.tag is None
        rows: list[HistoryRow] = []
        response_to: NameAddr | None = None  # the response's To, parsed once for the acc and the call
        if response.status >= 200 and (method == "BYE" or (method == "INVITE" and initial)):
            response_to = _name_addr(response.headers.get("To"))
            rows.append(
                self._acc(
                    request,
                    response,
                    fact.now,
                    call,
                    call_id=call_id,
                    caller=caller,
                    callee=callee,
                    response_to=response_to,
                )
            )
        if call is None or method != "INVITE" or not initial or call.challenged_at is not None:
            return rows
        if call_id == call.pickup_call_id:
            if 200 <= response.status < 300:
                call.current_call_id = call_id
                call.pickup_call_id = None
                call.old_leg_ended = None
            return rows
        if call_id != call.current_call_id:
            return rows
        offset = epoch_ms(fact.now) - call.record.started_ms
        if response.status in (180, 183) and call.record.ring_ms is None:
            call.record = updated(call.record, ring_ms=offset)
            rows.insert(0, call.record)
        elif 200 <= response.status < 300 and call.answered is None:
            call.answered = fact.now
            contact = _first_contact(response)
            to_tag = "" if response_to is None else response_to.tag or ""
            device_of = self._device_of
            call.record = updated(
                call.record,
                answer_ms=offset,
                to_tag=to_tag,
                answered_contact=contact,
                answered_device=None if contact is None or device_of is None else device_of(contact),
                final_sip_code=response.status,
                final_sip_reason=response.reason,
            )
            rows.insert(0, call.record)
        elif response.status >= 300 and call.answered is None:
            call.record = updated(
                call.record, final_sip_code=response.status, final_sip_reason=response.reason
            )
        return rows

    def _acc(
        self,
        request: Request,
        response: Response,
        now: float,
        call: Call | None,
        *,
        call_id: str,
        caller: NameAddr | None,
        callee: NameAddr,
        response_to: NameAddr | None,
    ) -> AccRecord:
        """The ``acc`` row of a final response; ``call_id``, ``caller`` and ``callee`` are the
        request's (its From and To, parsed), ``response_to`` the response's To (None:
        missing or malformed)."""
        src_user = src_domain = dst_user = dst_domain = from_tag = to_tag = src_ip = ""
        # Read in order up to the first part missing or malformed; the acc columns after it
        # default to ''.
        if caller is not None:
            src_user, src_domain = _user_host(caller.uri)
            dst_user, dst_domain = _user_host(callee.uri)
            from_tag = caller.tag or ""
            if response_to is not None:
                to_tag = response_to.tag or callee.tag or ""
                try:
                    via = top_via(request)
                    src_ip = via.received or via.host
                except MalformedMessage:
                    pass
        return AccRecord(
            seq=self._sequence.next(),
            time_ms=epoch_ms(now),
            method=request.method,
            from_tag=from_tag,
            to_tag=to_tag,
            callid=call_id,
            sip_code=f"{response.status:03d}",
            sip_reason=response.reason,
            src_user=src_user,
            src_domain=src_domain,
            src_ip=src_ip,
            dst_user=dst_user,
            dst_domain=dst_domain,
            line_aor=None if call is None else call.record.line_aor,
            appearance_index=None if call is None else call.record.appearance_index,
        )

    def ended(self, fact: CallEnded) -> list[HistoryRow]:
        call = self._calls.get(fact.call_id)
        if call is None or call.challenged_at is not None:
            return []
        if fact.reason is CallEndReason.BYE:
            if fact.call_id != call.current_call_id:
                self._forget_leg(call, fact.call_id)  # the held leg a pickup replaced
                return []
            if call.pickup_call_id is not None:
                call.old_leg_ended = fact.now  # Polycom: BYE of the old leg before the pickup's 200
                return []
            return self._end(call, fact.now, Disposition.ANSWERED, EndReason.BYE)
        if fact.call_id == call.pickup_call_id:
            call.pickup_call_id = None
            self._forget_leg(call, fact.call_id)
            if call.old_leg_ended is not None:
                return self._end(call, call.old_leg_ended, Disposition.ANSWERED, EndReason.BYE)
            return []
        if fact.call_id != call.current_call_id or call.answered is not None:
            return []
        if fact.status in (401, 407) and not call.cancelled:
            call.challenged_at = fact.now
            self._challenged[id(call)] = call
            end_ms = epoch_ms(fact.now)
            call.record = updated(
                call.record,
                disposition=Disposition.FAILED,
                end_reason=EndReason.REJECTED,
                final_sip_code=fact.status,
                ended_ms=end_ms,
                duration_ms=end_ms - call.record.started_ms,
                billable_ms=0,
            )
            return [call.record]
        cancelled = call.cancelled or fact.reason is CallEndReason.CANCELLED
        disposition, reason = failure_outcome(fact.status, cancelled=cancelled)
        if call.record.final_sip_code != fact.status:
            call.record = updated(call.record, final_sip_code=fact.status, final_sip_reason=None)
        return self._end(call, fact.now, disposition, reason)

    def _forget_leg(self, call: Call, call_id: str) -> None:
        call.call_ids.discard(call_id)
        if self._calls.get(call_id) is call:
            del self._calls[call_id]

    def _end(self, call: Call, now: float, disposition: Disposition, reason: EndReason) -> list[HistoryRow]:
        end_ms = epoch_ms(now)
        self._closed(call, end_ms)
        if call.record.parked and reason is EndReason.RING_TIMEOUT:
            reason = EndReason.PARK_TIMEOUT
        billable = 0 if call.answered is None else end_ms - epoch_ms(call.answered)
        call.record = updated(
            call.record,
            ended_ms=end_ms,
            duration_ms=end_ms - call.record.started_ms,
            billable_ms=billable,
            disposition=disposition,
            end_reason=reason,
        )
        for call_id in list(call.call_ids):
            self._forget_leg(call, call_id)
        return [call.record]


_Parties: TypeAlias = tuple[Request, str | None, NameAddr | None, NameAddr | None]
"""A request, its Call-ID, From and To (None: missing, or not a name-addr)."""


def _name_addr(text: str | None) -> NameAddr | None:
    """``text`` parsed as a From or To value; None when there is none or it is malformed."""
    if text is None:
        return None
    try:
        return parse_name_addr(text)
    except MalformedMessage:
        return None


def _ruri_aor(request: Request) -> str:
    try:
        return _aor(parse_uri(request.uri))
    except MalformedMessage:
        return request.uri


def _first_contact(message: Request | Response) -> str | None:
    try:
        found = contacts(message)
    except MalformedMessage:
        return None
    if isinstance(found, list) and found:
        return str(found[0].uri)
    return None
