"""The one interface every front end uses for the fleet's registry and liveness.

Two engines provide it: :class:`~smartget.hub.state.sqlite.SqliteState` (the embedded
default: the in-memory :class:`~smartget.hub.registry.Registry` made durable in the
hub's SQLite store, exactly as before) and
:class:`~smartget.hub.state.redisengine.RedisState` (``--state redis://``: several hubs
on one Redis; each change is one server-side function call).

Every command raises the :mod:`smartget.errors` tree as :mod:`smartget.hub.commands`
does, with the same messages, so each front end keeps its one mapping to replies. A
command returns once what it changed is durable ("nothing acknowledged is lost").

The text protocol's hot path does not go through these coroutines on SQLite (it runs
the sans-IO core synchronously, then waits for the commit); on Redis it hands a whole
read's commands to :meth:`RemoteText.submit_text`, which sends them in one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from smartget.errors import RegistryError
from smartget.hub import textproto as tp
from smartget.hub.collector import Report
from smartget.hub.commands import Caller
from smartget.hub.registry import Node

if TYPE_CHECKING:
    import asyncio

__all__ = ["FleetState", "Outcome", "RemoteText", "SharedReports", "StateUnavailable"]


class StateUnavailable(RegistryError):
    """The shared state (Redis) did not answer in time: the command may or may not
    have been carried out. The text protocol answers "could not save", the JSON API 503."""


# What one text command came to: its result, or the error it raised (None for the
# commands the text server answers itself: `session, bad requests).
Outcome = Node | list[Node] | RegistryError | None


class FleetState(Protocol):
    """The fleet's nodes, wherever they live."""

    @property
    def engine(self) -> str:
        """``sqlite`` or ``redis``."""
        ...

    async def register(
        self, caller: Caller, port: int, *, ip: str | None = None, **info: Any
    ) -> Node: ...

    async def deregister(self, caller: Caller, node_id: int) -> Node: ...

    async def request_nodes(
        self, caller: Caller, n: int, *, zone: str | None = None, exclude: Iterable[int] = ()
    ) -> list[Node]: ...

    async def set_status(self, caller: Caller, node_id: int, status: int) -> Node: ...

    async def update_info(self, node_id: int, **info: object) -> Node: ...

    async def get_node(self, node_id: int) -> Node | None: ...

    async def find_node(self, addr: str, port: int) -> int | None: ...

    async def list_nodes(
        self,
        *,
        zone: str | None = None,
        status: int | None = None,
        available: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Node]: ...

    async def statistics(self) -> dict[str, int]: ...

    async def hubs(self) -> list[dict[str, Any]]:
        """The hubs serving this fleet whose heartbeat is current."""
        ...


class RemoteText(Protocol):
    """An engine the text server hands whole reads to (Redis)."""

    def submit_text(self, events: Sequence[tp.Event], ip: str) -> asyncio.Future[list[Outcome]]:
        """Queue the commands of one read, in order; the future holds one outcome each."""
        ...


class SharedReports(Protocol):
    """The status collector shared by several hubs (Redis: ``reports.py``). With one
    hub (SQLite) there is none: the hub's own :class:`~smartget.hub.collector.Collector`
    answers, synchronously, exactly as before."""

    async def receive(self, report: Report) -> bool:
        """Take a report ``own_report`` let through; True if it shows the download done,
        durable once this returns. CollectorError if refused (a stranger, a cap)."""
        ...

    async def progress(
        self, sha1: str | None = None, nodeid: str | None = None
    ) -> tuple[int, list[Report]]:
        """The latest reports (by node id, then sha1) and a seq they are as new as."""
        ...

    async def wait_news(self, after: int, seconds: float) -> None:
        """Until a report with a seq above ``after`` was taken (by any hub), or ``seconds``."""
        ...

    async def forget(self, sha1: str) -> int:
        """Forget every report on a torrent; how many there were."""
        ...
