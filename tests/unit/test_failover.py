"""The ring of hubs a client keeps to, and when a failed call may go to another."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import ConfigError
from smartget.failover import Endpoints, may_retry


def test_keeps_to_one_until_it_fails_then_the_next_in_order() -> None:
    hubs = Endpoints(["a", "b", "c"])
    assert hubs.current == "a"
    assert hubs.attempts() == ["a", "b", "c"]
    assert hubs.failed("a")
    assert hubs.current == "b"
    assert hubs.attempts() == ["b", "c", "a"]  # the failed one is tried again last
    assert hubs.failed("b")
    assert hubs.failed("c")
    assert hubs.current == "a"
    assert hubs.moves == 3


def test_several_failures_of_one_hub_move_once() -> None:
    hubs = Endpoints(["a", "b", "c"])
    assert hubs.failed("a")
    assert not hubs.failed("a")  # a second call that failed on a, in flight meanwhile
    assert hubs.current == "b"


def test_a_call_that_fell_through_makes_its_hub_current() -> None:
    hubs = Endpoints(["a", "b", "c"])
    hubs.answered("c")
    assert hubs.current == "c"
    hubs.answered("z")  # not one of them: nothing changes
    assert hubs.current == "c"


def test_one_hub_never_moves_and_duplicates_count_once() -> None:
    hubs = Endpoints(["a", "a"])
    assert len(hubs) == 1
    assert not hubs.failed("a")
    with pytest.raises(ConfigError, match="no hub"):
        Endpoints([])


def test_only_calls_that_cannot_have_been_carried_out_twice_go_elsewhere() -> None:
    assert may_retry("POST", connected=False)  # never reached the hub
    assert not may_retry("POST", connected=True)  # may have created a job
    assert not may_retry("patch", connected=True)
    assert may_retry("GET", connected=True)
    assert may_retry("PUT", connected=True)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.lists(st.integers(0, 5)))
def test_the_current_hub_is_always_one_of_them(items: list[int], events: list[int]) -> None:
    hubs = Endpoints(items)
    for event in events:
        if event % 2:
            hubs.failed(event)
        else:
            hubs.answered(event)
        assert hubs.current in items
        assert sorted(hubs.attempts()) == sorted(set(items))
