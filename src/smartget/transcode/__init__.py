"""Distributed transcoding over the mesh: MSW's ffmpeg plugin (seed 001, issue 8).

A server node cuts a video into segments on keyframes (no re-encoding), hands them to
worker nodes as they ask, checks what comes back and joins it in order; workers
transcode with the job's parameters and send the results back as file Datapacks.

Modules (sans-IO cores marked *):

==============  ========================================================================
``plan`` *      one job's state: tasks, leases with deadlines, retries, checks
``ffmpeg`` *    job parameters, ffmpeg argv builders, the probe parser
``messages`` *  the app's packets, built and read in one place
``runner``      ffmpeg as a subprocess: run with a deadline, probe, decode-check
``server``      the server role: split, hand out, check, join
``worker``      the worker role: ask, transcode, send back
``app``         the mesh app entry point (``create_app``: a volunteer worker)
``cli``         ``smartget transcode serve|work``
==============  ========================================================================
"""

from smartget.transcode.app import create_app
from smartget.transcode.ffmpeg import JobParams, Probe
from smartget.transcode.messages import APP_NAME
from smartget.transcode.plan import Plan, Task, TaskState
from smartget.transcode.server import JobSettings, ServerApp
from smartget.transcode.worker import WorkerApp

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
