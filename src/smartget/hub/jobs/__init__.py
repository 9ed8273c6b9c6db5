"""Push jobs in the hub: a push that outlives its controller (issue 15).

The sans-IO core is :mod:`.core` (:class:`JobBook`) over the records of :mod:`.model`;
:mod:`.runner` is its asyncio driver (node tasks over HTTP, the store, waiters) and
:mod:`.http` its routes (``/api/jobs``). Only the core and the model are imported here,
so importing the package loads no I/O.
"""

from smartget.hub.jobs.core import Command, JobBook
from smartget.hub.jobs.model import (
    SOURCES,
    CopyState,
    FileSpec,
    Job,
    JobEvent,
    JobSpec,
    JobState,
    NodeInfo,
    parse_spec,
)

__all__ = [
    "SOURCES",
    "Command",
    "CopyState",
    "FileSpec",
    "Job",
    "JobBook",
    "JobEvent",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "parse_spec",
]
