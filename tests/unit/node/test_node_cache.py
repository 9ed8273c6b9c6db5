"""The cache's eviction policy (node/cache.py): no I/O, ``now`` passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import ConfigError
from smartget.node.cache import CachePolicy


def _sha1(i: int) -> str:
    return f"{i:040x}"


def test_nothing_is_evicted_under_the_high_watermark_or_when_off() -> None:
    cache = CachePolicy(1000, 800)
    cache.completed(_sha1(1), 600, now=1)
    cache.completed(_sha1(2), 400, now=2)
    assert cache.total == 1000
    assert not cache.over()
    assert cache.plan(3) == []
    off = CachePolicy()
    off.completed(_sha1(1), 10**12, now=1)
    assert not off.enabled
    assert off.plan(2) == []


def test_least_recently_used_goes_first_down_to_the_low_watermark() -> None:
    cache = CachePolicy(1000, 700)
    for i in range(1, 5):  # 4 x 300 = 1200 > 1000
        cache.completed(_sha1(i), 300, now=i)
    cache.used(_sha1(1), now=10)  # served again: now the most recent
    plan = [e.sha1 for e in cache.plan(11)]
    assert plan == [_sha1(2), _sha1(3)]  # 1200 - 600 = 600 <= 700
    for sha1 in plan:
        cache.evicted_one(sha1)
    assert cache.total == 600
    assert cache.statistics()["cache_evicted"] == 2
    assert cache.statistics()["cache_evicted_bytes"] == 600


def test_pins_and_running_downloads_hold_and_pins_end() -> None:
    cache = CachePolicy(1000, 500)
    cache.completed(_sha1(1), 600, now=1)
    cache.pin(_sha1(1), until=100, now=1)
    cache.pin(_sha1(1), until=50, now=2)  # the later pin wins
    cache.running(_sha1(2), now=3)  # a download that runs: not counted, not evicted
    cache.completed(_sha1(3), 600, now=4)
    assert [e.sha1 for e in cache.plan(10)] == [_sha1(3)]
    assert [e.sha1 for e in cache.plan(101)] == [_sha1(1), _sha1(3)]


def test_a_download_of_complete_content_runs_again() -> None:
    cache = CachePolicy(100, 50)
    cache.completed(_sha1(1), 200, now=1)
    cache.running(_sha1(1), now=2)
    assert cache.total == 0
    assert cache.plan(3) == []


def test_dirty_entries_are_handed_out_once() -> None:
    cache = CachePolicy(100)
    cache.completed(_sha1(1), 10, now=1)
    cache.used(_sha1(1), now=0.5)  # older than the last use: no change
    assert [e.sha1 for e in cache.take_dirty()] == [_sha1(1)]
    assert cache.take_dirty() == []
    cache.used(_sha1(9), now=5)  # unknown: ignored
    assert cache.take_dirty() == []


def test_default_low_watermark_and_bad_watermarks() -> None:
    assert CachePolicy(1000).low == 900
    with pytest.raises(ConfigError, match="above --cache-max"):
        CachePolicy(100, 200)
    with pytest.raises(ConfigError):
        CachePolicy(-1)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["complete", "run", "use", "pin", "forget", "evict"]),
        st.integers(0, 7),  # which torrent
        st.integers(0, 500),  # size or pin length
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, high=st.integers(1, 2000), low_share=st.floats(0, 1))
def test_pinned_and_running_are_never_evicted_and_the_total_ends_low(
    ops: list[tuple[str, int, int]], high: int, low_share: float
) -> None:
    low = int(high * low_share)
    cache = CachePolicy(high, low)
    now = 0.0
    for op, i, n in ops:
        now += 1
        sha1 = _sha1(i)
        if op == "complete":
            cache.completed(sha1, n, now)
        elif op == "run":
            cache.running(sha1, now)
        elif op == "use":
            cache.used(sha1, now)
        elif op == "pin":
            cache.pin(sha1, now + n, now)
        elif op == "forget":
            cache.forget(sha1)
        assert cache.total == sum(e.size for e in cache.entries.values() if e.complete)
        if op != "evict":
            continue
        plan = cache.plan(now)
        held = {s for s, e in cache.entries.items() if not e.complete or e.pinned(now)}
        assert not held & {e.sha1 for e in plan}
        used = [e.used for e in plan]
        assert used == sorted(used)  # least recently used first
        evictable = [e for e in cache.entries.values() if e.complete and not e.pinned(now)]
        floor = cache.total - sum(e.size for e in evictable)
        was_over = cache.over()
        for entry in plan:
            cache.evicted_one(entry.sha1)
        if was_over:
            assert cache.total <= low or cache.total == floor  # down to low when possible
            if plan:  # no more than needed: the last one evicted was still needed
                assert cache.total + plan[-1].size > low
        else:
            assert plan == []
