from __future__ import annotations

import pytest

from smartget.ratelimit import TokenBucket


def test_token_bucket_paces_after_the_burst() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    assert bucket.take(100, 0.0) == 0.0  # the burst
    assert bucket.take(100, 0.0) == pytest.approx(0.1)  # queued behind it
    assert bucket.take(50, 0.1) == pytest.approx(0.05)
    assert bucket.take(10, 10.0) == 0.0  # refilled, never beyond the burst
    assert bucket.tokens == pytest.approx(90)


def test_token_bucket_bursts_then_paces() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    assert [bucket.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1, 0.0) == pytest.approx(0.1)
    assert bucket.take(1, 0.0) == pytest.approx(0.2)
    # after a second the debt is paid and the burst is full again
    assert bucket.take(1, 1.0) == 0.0
    assert bucket.take(1, 1.0) == 0.0
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)


def test_token_bucket_never_paces_faster_than_rate() -> None:
    bucket = TokenBucket(rate=50.0, burst=1)
    now, sent = 0.0, 0
    while now < 2.0:
        now += bucket.take(1, now)
        sent += 1
    assert sent <= 1 + 2.0 * 50 + 1
