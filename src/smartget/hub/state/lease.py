"""Who runs the fleet's liveness sweeps: a lease in Redis, decided here (sans-IO).

Several hubs share one registry; turning silent nodes into zombies and removing them
is done by one hub at a time. The hub holding ``P lease:sweep`` (``SET NX PX``, renewed
by a compare-and-expire function) sweeps; the others try to take it on every tick, and
one of them gets it within a lease time once the holder dies.

The core never reads a clock: it is told when a try was *sent* and what came back. A
hub counts on the lease only until ``sent + ttl - margin``: Redis started the lease's
time no earlier than the try was sent, so the hub's view never outlasts Redis's. With
a clock drift between hubs that is irrelevant: each hub compares its own times.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lease"]


@dataclass
class Lease:
    """One hub's view of a lease. ``ttl`` and ``margin`` in seconds."""

    ttl: float = 5.0
    margin: float = 1.0
    held_until: float = float("-inf")
    tries: int = 0
    takeovers: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.ttl:
            raise ValueError(
                f"lease margin must be from 0 to below ttl ({self.ttl}), got {self.margin}"
            )

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def holds(self, now: float) -> bool:
        """May this hub sweep at ``now``?"""
        return now < self.held_until

    def answered(self, sent: float, granted: bool, now: float) -> bool:
        """Record a try's answer; True when this hub has just taken the lease over."""
        self.tries += 1
        was_held = self.holds(now)
        if granted:
            self.held_until = sent + self.ttl - self.margin
        else:
            self.held_until = float("-inf")
        taken = granted and not was_held
        self.takeovers += taken
        return taken

    def failed(self) -> None:
        """A try got no answer: the lease may have lapsed, so stop sweeping at once."""
        self.held_until = float("-inf")

    def next_try(self, now: float) -> float:
        """When to renew (a third of the lease) or to try to take it over."""
        return now + self.ttl / 3
