"""The node's task API (seed 003), as a FastAPI app.

Routes: ``/ping`` (GET or POST -> ``PONG``), one route per event (``/maketorrent``,
``/download``, ``/shutdown``, ``/shutdownall``, ``/delete``, and ``/prefetch`` of a
striped push) and the original's grouped routes (``/puttask``: download or delete;
``/shutdowntask``: shutdown or shutdownall).
``GET /status`` lists the torrents and the cache (watermarks, bytes held, the last
evictions), ``/metrics`` is for Prometheus. Every route needs
credentials (see :mod:`smartget.node.auth`): 401 ``Unauthorized`` otherwise.

The app depends on :class:`TaskRunner`, the part of the agent it calls, and on a
``statistics`` callable for ``/metrics``; :mod:`smartget.node.service` passes them in.

The body is read raw and parsed by :func:`~smartget.node.tasks.parse_task`, whatever the
Content-Type (the original clients post JSON without one). A malformed task gets seed
003's response with ``result`` ``failed`` and the reason in ``traceback``, HTTP 200 like
every task answer, never a 500. A task is at most :data:`~smartget.node.tasks.MAX_TASK_BYTES`
(1 MiB), but ``/maketorrent`` takes up to :data:`~smartget.node.tasks.MAX_DIGESTS_TASK_BYTES`
(every piece's SHA-1 of a striped push, :data:`BODY_LIMITS`); a body that large is parsed
in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import prometheus_client as prom
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smartget import __version__
from smartget.errors import TaskError
from smartget.node.auth import Credentials
from smartget.node.tasks import (
    EVENTS,
    MAX_DIGESTS_TASK_BYTES,
    MAX_TASK_BYTES,
    NodeIdentity,
    Task,
    parse_task,
    peek_taskid,
)

__all__ = ["BODY_LIMITS", "ROUTES", "TaskRunner", "create_api_app"]

# route -> events it accepts (seed 003 and the original's grouped routes)
ROUTES: dict[str, tuple[str, ...]] = {
    **{f"/{event}": (event,) for event in EVENTS},
    "/puttask": ("download", "delete"),
    "/shutdowntask": ("shutdown", "shutdownall"),
}
# routes whose bodies may pass MAX_TASK_BYTES, and their own limit
BODY_LIMITS: dict[str, int] = {"/maketorrent": MAX_DIGESTS_TASK_BYTES}


class TaskRunner(Protocol):
    """What the API asks of the agent."""

    @property
    def identity(self) -> NodeIdentity: ...

    async def handle(self, task: Task) -> dict[str, Any]: ...

    def failure(self, event: str, taskid: str, reason: str) -> dict[str, Any]: ...

    def torrents_status(self) -> list[dict[str, Any]]: ...

    def cache_status(self) -> dict[str, Any]: ...


class _StatsCollector(Collector):
    def __init__(self, statistics: Callable[[], Mapping[str, int]]) -> None:
        self.statistics = statistics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for key, value in self.statistics().items():
            yield GaugeMetricFamily(f"smartget_node_{key}", f"node: {key}", value=value)


def create_api_app(
    agent: TaskRunner, credentials: Credentials, statistics: Callable[[], Mapping[str, int]]
) -> FastAPI:
    app = FastAPI(
        title="SmartGet node",
        version=__version__,
        description="Seed 003's task API: maketorrent, download, shutdown, shutdownall, "
        "delete, ping; prefetch (a striped push). Authenticate with ?user=U&pwd=<md5 of "
        "password> or a bearer token.",
    )
    metrics = prom.CollectorRegistry()
    metrics.register(_StatsCollector(statistics))

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else None
        if not credentials.check(
            user=request.query_params.get("user"),
            pwd=request.query_params.get("pwd"),
            bearer=bearer,
        ):
            return PlainTextResponse("Unauthorized", status_code=401)
        response: Response = await call_next(request)
        return response

    @app.api_route("/ping", methods=["GET", "POST"], response_class=PlainTextResponse)
    async def ping() -> str:
        """Seed 003: answers PONG when the node is up."""
        return "PONG"

    def task_route(path: str, events: tuple[str, ...]) -> None:
        limit = BODY_LIMITS.get(path, MAX_TASK_BYTES)

        async def run(request: Request) -> JSONResponse:
            body = await request.body()
            single = events[0] if len(events) == 1 else None
            try:
                if len(body) > MAX_TASK_BYTES:  # megabytes of JSON: off the loop
                    task = await asyncio.to_thread(
                        parse_task, body, time.time(), event=single, max_bytes=limit
                    )
                else:
                    task = parse_task(body, time.time(), event=single, max_bytes=limit)
                if task.event not in events:
                    raise TaskError(
                        f"event {task.event!r} is not taken by {path} "
                        f"(it takes {' or '.join(events)})"
                    )
            except TaskError as exc:
                event = single or "task"
                return JSONResponse(agent.failure(event, peek_taskid(body), str(exc)))
            return JSONResponse(await agent.handle(task))

        run.__doc__ = f"Seed 003 task: {' or '.join(events)}."
        app.add_api_route(path, run, methods=["POST"], name=path.strip("/"))

    for path, events in ROUTES.items():
        task_route(path, events)

    @app.get("/status")
    async def status() -> dict[str, Any]:
        """Every torrent of this node with its progress, and its cache (the evictions)."""
        return {
            "nodeid": agent.identity.nodeid,
            "torrents": agent.torrents_status(),
            "cache": agent.cache_status(),
        }

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(prom.generate_latest(metrics), media_type=prom.CONTENT_TYPE_LATEST)

    return app
