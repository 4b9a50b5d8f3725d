"""A NOTIFY sink: answers every SIP request it receives with 200 and counts NOTIFYs.

    python -m bench.sink PORT STATUS_FILE

Used where the server sends more NOTIFYs than a SIPp sink holds calls for (the full-state
NOTIFYs scaserver sends to every restored subscription, sca.md section 10.3).  Every 0.2 s
and on SIGTERM it writes ``{"notifies": N, "first": t, "last": t}`` (epoch seconds of the
first and latest NOTIFY, kernel receive time) to STATUS_FILE.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from bench.sipua import Endpoint, ok_response

STATUS_PERIOD_S = 0.2


def serve(port: int, status: Path) -> None:
    endpoint = Endpoint(port)
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    count, first, last = 0, 0.0, 0.0
    seen: set[tuple[str, int]] = set()
    next_status = 0.0

    def write_status() -> None:
        tmp = status.with_suffix(".tmp")
        tmp.write_text(json.dumps({"notifies": count, "first": first, "last": last}))
        tmp.replace(status)

    while not stop:
        for message, address in endpoint.receive(0.05):
            if not message.is_request or message.method == "ACK":
                continue
            endpoint.send(ok_response(message), address)
            if message.method == "NOTIFY":
                key = (message.call_id, message.cseq[0])
                if key not in seen:
                    seen.add(key)
                    count += 1
                    first = first or message.arrived
                    last = message.arrived
        if time.monotonic() >= next_status:
            write_status()
            next_status = time.monotonic() + STATUS_PERIOD_S
    write_status()
    endpoint.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    serve(int(args[0]), Path(args[1]))


if __name__ == "__main__":
    main()
