"""The edge node (seed 003): a task API on libtorrent, a file server, reports, the hub.

``smartget node`` runs it; :func:`running` runs it inside a program or a test. The parts
and how they connect: ``README.md`` in this folder.

:class:`Node` and :func:`running` are imported on first use, so that the pure modules
(``tasks``, ``status``, ``policy``, ``report``, ``settings``, ``paths``) can be imported
without loading libtorrent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartget.errors import TaskError
from smartget.node.settings import NodeSettings
from smartget.node.tasks import NodeIdentity, Task, parse_task, response

if TYPE_CHECKING:
    from smartget.node.service import Node, running

__all__ = [
    "Node",
    "NodeIdentity",
    "NodeSettings",
    "Task",
    "TaskError",
    "parse_task",
    "response",
    "running",
]


def __getattr__(name: str) -> Any:
    if name in ("Node", "running"):
        from smartget.node import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
