from __future__ import annotations

import pytest

from scaserver.router.facts import TransactionCompleted, completion
from scaserver.sip.actions import Deliver


@pytest.mark.parametrize(
    ("side", "method", "status", "kind", "outcome"),
    [
        ("server", "SUBSCRIBE", 200, "non-invite-server", "2xx"),
        ("server", "SUBSCRIBE", 202, "non-invite-server", "2xx"),
        ("client", "NOTIFY", 481, "non-invite-client", "4xx"),
        ("client", "INVITE", 486, "invite-client", "4xx"),
        ("server", "INVITE", 603, "invite-server", "6xx"),
        ("client", "INVITE", 301, "invite-client", "3xx"),
        ("server", "REGISTER", 503, "non-invite-server", "5xx"),
    ],
)
def test_a_completion_delivers_the_fact_of_its_side_kind_and_status_class(
    side: str, method: str, status: int, kind: str, outcome: str
) -> None:
    assert completion(side, method, status) == Deliver(TransactionCompleted(kind, outcome))


def test_completions_of_one_side_kind_and_class_are_one_shared_value() -> None:
    assert completion("client", "NOTIFY", 200) is completion("client", "SUBSCRIBE", 299)
    assert completion("client", "NOTIFY", 200) is not completion("server", "NOTIFY", 200)
    assert completion("client", "NOTIFY", 200) is not completion("client", "INVITE", 200)
    assert completion("client", "NOTIFY", 200) is not completion("client", "NOTIFY", 300)
