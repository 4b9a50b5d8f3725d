"""Target set ordering (RFC 3261 16.6 "q-value", 16.5 no duplicates)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scaserver.proxy.target import Target, order_targets


def test_equal_q_is_one_parallel_group() -> None:
    a, b = Target("sip:a@h"), Target("sip:b@h")
    assert order_targets([a, b]) == [(a, b)]


def test_groups_in_decreasing_q_keep_input_order_within_a_group() -> None:
    low = Target("sip:low@h", q=0.1)
    high1 = Target("sip:high1@h", q=0.9)
    mid = Target("sip:mid@h", q=0.5)
    high2 = Target("sip:high2@h", q=0.9)
    assert order_targets([low, high1, mid, high2]) == [(high1, high2), (mid,), (low,)]


def test_a_uri_is_tried_once() -> None:
    first, again = Target("sip:a@h", q=0.5), Target("sip:a@h", q=1.0)
    assert order_targets([first, again]) == [(first,)]


def test_no_targets_no_groups() -> None:
    assert order_targets([]) == []


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from([0.0, 0.3, 0.5, 1.0])), max_size=12))
def test_every_unique_target_once_and_q_never_increases(items: list[tuple[int, float]]) -> None:
    targets = [Target(f"sip:u{n}@h", q=q) for n, q in items]
    groups = order_targets(targets)
    flat = [t for group in groups for t in group]
    assert len({t.uri for t in flat}) == len(flat) == len({t.uri for t in targets})
    qs = [group[0].q for group in groups]
    assert qs == sorted(set(qs), reverse=True)
    assert all(len({t.q for t in group}) == 1 for group in groups)
