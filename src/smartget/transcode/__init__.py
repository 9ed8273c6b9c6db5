"""Distributed transcoding over the mesh: MSW's ffmpeg plugin (seed 001, issue 8).

A server node cuts a video into segments on keyframes (no re-encoding), hands them to
worker nodes as they ask, checks what comes back and joins it in order; workers
transcode with the job's parameters and send the results back as file Datapacks.

Modules:

==========  ========================================================================
``plan``    one job's state: tasks, leases with deadlines, retries, checks (sans-IO)
``ffmpeg``  ffmpeg argv builders, the probe parser, asyncio runners
``app``     the ``transcode`` mesh app: server and worker roles
``cli``     ``smartget transcode serve|work``
==========  ========================================================================
"""

from smartget.transcode.app import APP_NAME, JobSettings, ServerApp, WorkerApp, create_app
from smartget.transcode.ffmpeg import JobParams, Probe
from smartget.transcode.plan import Plan, Task, TaskState

__all__ = [
    "APP_NAME",
    "JobParams",
    "JobSettings",
    "Plan",
    "Probe",
    "ServerApp",
    "Task",
    "TaskState",
    "WorkerApp",
    "create_app",
]
