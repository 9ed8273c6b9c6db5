"""One token bucket for every rate the project paces: the origin's upload cap (bytes)
and the relay's message rate (messages).

The bucket is clock-free (time comes in as ``now``) and always grants: :meth:`take`
spends at once, going into debt when there is not enough credit, and says how long the
caller must wait before using what it took. Callers therefore queue in the order they
asked and, together, never run faster than ``rate`` after the first ``burst``.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` units a second with at most ``burst`` saved up (default: one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None, now: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.tokens = self.burst
        self.stamp = now  # None: the clock starts at the first take

    def take(self, amount: float, now: float) -> float:
        """Spend ``amount``; the seconds to wait before using it (0.0: at once)."""
        if self.stamp is None or now > self.stamp:
            if self.stamp is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        self.tokens -= amount
        return max(0.0, -self.tokens / self.rate)
