"""Several hubs, one fleet (issue 13): which hub a client talks to, and when to move on.

A node (``--hub-http``, ``--hub``, ``--report-url``) and a controller (``smartget push
--hub-http``, ``smartget jobs``) may name several hubs serving one fleet (on one Redis).
The client keeps to one hub while it answers and moves to the next, in the order
given, when it stops answering; a hub that failed is tried again only after the others
(the list is a ring). Sans-IO: the drivers report what happened.

Whether a failed call may be sent again to another hub depends on whether the first hub
may have carried it out: a connection that was never made, or a method that is
idempotent (GET, PUT, DELETE, HEAD), may; a POST or PATCH whose request may have
reached the hub (a read timeout, a reset) may not, since it could be done twice (a push
job submitted twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from smartget.errors import ConfigError

__all__ = ["IDEMPOTENT", "Endpoints", "may_retry"]

T = TypeVar("T")

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class Endpoints(Generic[T]):
    """A ring of equivalent servers; ``current`` is the one in use."""

    def __init__(self, items: Sequence[T], what: str = "hub") -> None:
        unique = list(dict.fromkeys(items))
        if not unique:
            raise ConfigError(f"no {what} given")
        self._items = unique
        self._index = 0
        self.moves = 0  # how many times a client moved to another server

    def __len__(self) -> int:
        return len(self._items)

    @property
    def all(self) -> tuple[T, ...]:
        return tuple(self._items)

    @property
    def current(self) -> T:
        return self._items[self._index]

    def attempts(self) -> list[T]:
        """The order to try them in for one call: the current one, then the next ones."""
        n = len(self._items)
        return [self._items[(self._index + k) % n] for k in range(n)]

    def failed(self, item: T) -> bool:
        """``item`` stopped answering: move past it if it is the current one.

        Returns True if the client moved (several calls failing on one server at once
        move it once, not once each).
        """
        if len(self._items) == 1 or item != self.current:
            return False
        self._index = (self._index + 1) % len(self._items)
        self.moves += 1
        return True

    def answered(self, item: T) -> None:
        """``item`` answered: keep to it (a call that fell through to it makes it current)."""
        if item in self._items:
            self._index = self._items.index(item)


def may_retry(method: str, *, connected: bool) -> bool:
    """May a call that failed on one hub be sent to another? (see the module docstring)"""
    return not connected or method.upper() in IDEMPOTENT
