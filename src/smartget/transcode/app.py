"""The ``transcode`` mesh app's entry point (``smartget.mesh_apps``; ``--apps-dir``).

The roles live in server.py and worker.py, their packets in messages.py.
"""

from __future__ import annotations

from smartget.mesh.apps import App
from smartget.transcode.messages import APP_NAME
from smartget.transcode.worker import WorkerApp

__all__ = ["APP_NAME", "create_app"]


def create_app() -> App:
    """A worker that takes its server from the app's settings (``server``), or from the
    first ``op: offer``: what ``smartget mesh run --app transcode`` runs."""
    return WorkerApp(None)
