"""The running server's GIL switch interval."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from scaserver.edge.threadswitch import SWITCH_INTERVAL_S, shorten_thread_switch_interval


@pytest.fixture
def restored_interval() -> Iterator[float]:
    was = sys.getswitchinterval()
    try:
        yield was
    finally:
        sys.setswitchinterval(was)


def test_the_interval_is_shortened_and_the_old_one_returned(restored_interval: float) -> None:
    assert shorten_thread_switch_interval() == restored_interval
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
