"""The edge node (seed 003): a task API on libtorrent, a file server, reports, the hub.

``smartget node`` runs it; :func:`running` runs it inside a program or a test.
"""

from smartget.node.service import Node, NodeSettings, running
from smartget.node.tasks import NodeIdentity, Task, TaskError, parse_task, response

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
