"""The Date header's value: email.utils.formatdate's text, at every instant."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from scaserver.sip.date import date_value


@pytest.mark.parametrize(
    "now",
    [
        0.0,
        1.5,
        1_000_000.0,
        1_733_500_000.25,
        59.999998,  # rounds to .999998: the same second
        59.9999989,
        59.999999,  # the fractions that may carry into the next second once rounded
        59.9999994,
        59.9999995,
        59.9999996,
        1_733_500_000.9999999,
        4_102_444_799.9999995,
        -0.5,  # before 1970
        -1.0000001,
    ],
)
def test_the_value_is_formatdate_s(now: float) -> None:
    assert date_value(now) == formatdate(now, usegmt=True)


def test_consecutive_seconds_are_not_confused() -> None:
    values = [date_value(1_733_500_000 + tenth / 10) for tenth in range(30)]
    assert values == [formatdate(1_733_500_000 + tenth / 10, usegmt=True) for tenth in range(30)]
    assert len(set(values)) == 3
