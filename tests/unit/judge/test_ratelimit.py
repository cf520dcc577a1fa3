"""The token bucket behind requests-per-minute and tokens-per-minute (sgpo.judge.ratelimit)."""

from __future__ import annotations

import time

import pytest

from sgpo.judge.ratelimit import RateLimitTimeout, TokenBucket


def test_a_bucket_holds_one_second_of_its_rate_and_a_large_claim_leaves_debt() -> None:
    b = TokenBucket(600)  # 10 per second
    assert (b.rate, b.capacity) == (10.0, 10.0)
    assert TokenBucket(30).capacity == 1.0  # slower than one a second: bursts of one
    assert b.acquire(10) == 0.0  # the full bucket admits without waiting
    with pytest.raises(RateLimitTimeout):
        b.acquire(1, deadline=time.monotonic())  # empty: a wait past the deadline takes nothing
    big = TokenBucket(60)  # 1 per second
    assert big.acquire(50) == 0.0  # larger than the bucket: admitted once it is full, leaving debt
    with pytest.raises(RateLimitTimeout, match=r"delay this request by (49|50)"):
        big.acquire(1, deadline=time.monotonic() + 1)


def test_settle_charges_the_difference_and_never_overfills() -> None:
    b = TokenBucket(6000)  # 100 per second
    b.acquire(100)
    b.settle(-1000)  # the request was much smaller than estimated: refunded, up to the capacity
    assert b.acquire(100, deadline=time.monotonic()) == 0.0
    b.settle(500)  # bigger than estimated: the next claim waits for the debt
    with pytest.raises(RateLimitTimeout):
        b.acquire(1, deadline=time.monotonic() + 1)
    with pytest.raises(ValueError, match="must be > 0"):
        TokenBucket(0)
