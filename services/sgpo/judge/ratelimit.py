"""Requests-per-minute and tokens-per-minute limits of the `llm` backend: token buckets shared by its threads.

A bucket holds at most one second's worth of its rate (at least 1), refills continuously, and admits a claim
once it holds min(claim, capacity); the claim may drive it below zero (debt), so a request larger than the
bucket still passes and the ones after it wait longer. Over any interval of T seconds a bucket admits at most
capacity + rate * T (plus, for tokens, one request's underestimate, settled by `settle` once the reply's
usage is known). The same scheme as verl's rate-limited reward manager (max_rpm / max_tpm).
"""

from __future__ import annotations

import threading
import time


class RateLimitTimeout(Exception):
    """The wait would pass the caller's deadline."""


class TokenBucket:
    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be > 0 per minute; got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._level = self.capacity
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._t) * self.rate)
        self._t = now

    def acquire(self, amount: float, deadline: float | None = None) -> float:
        """Take `amount`, waiting as long as needed (up to `deadline`, a time.monotonic() value); the seconds
        waited. Raises RateLimitTimeout, taking nothing, when the wait would pass the deadline."""
        need = min(amount, self.capacity)
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._refill(now)
                if self._level >= need:
                    self._level -= amount
                    return waited
                wait = (need - self._level) / self.rate
            if deadline is not None and now + wait > deadline:
                raise RateLimitTimeout(f"the rate limit would delay this request by {wait:.1f} s")
            time.sleep(wait)
            waited += wait

    def settle(self, delta: float) -> None:
        """Charge `delta` more (or give back -delta) once a request's real size is known."""
        with self._lock:
            self._refill(time.monotonic())
            self._level = min(self.capacity, self._level - delta)
