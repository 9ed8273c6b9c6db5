"""The hub's HTTP face: a JSON API over the registry, health, metrics, OpenAPI docs.

Every ``/api`` route needs ``Authorization: Bearer <token>`` (the hub's ``--token``, or
the one generated in DATA_DIR/hub.token). ``/healthz``, ``/metrics`` and ``/docs`` are
open. Changes are durable before the response leaves, as on the text protocol.
"""

from __future__ import annotations

import socket
from typing import Annotated, Any, Protocol

import prometheus_client as prom
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from smartget import __version__
from smartget.auth import secret_matches
from smartget.errors import (
    NodeExistsError,
    NodeNotFoundError,
    NotPermittedError,
    RegistryError,
)
from smartget.httpserver import BodyLimit
from smartget.hub.commands import FromOperator, HubCommands
from smartget.hub.console import ConsoleHost, add_console
from smartget.hub.fastlane import FastLaneServer
from smartget.hub.fleet import FleetHandlers, FleetHost, add_fleet_routes
from smartget.hub.jobs.http import add_job_routes
from smartget.hub.jobs.runner import JobRunner
from smartget.hub.registry import MAX_STATUS, Node, Registry
from smartget.hub.relay.http import RelayHost, RPC2Passthrough, add_relay_routes
from smartget.hub.state import FleetState, StateUnavailable

__all__ = ["HubAPI", "create_app", "start_http"]


class HubAPI(FleetHost, ConsoleHost, RelayHost, Protocol):
    """What the HTTP app needs from the hub (hub/app.py's Hub provides it)."""

    registry: Registry
    commands: HubCommands
    state: FleetState  # the fleet's nodes: this hub's SQLite, or a Redis shared by hubs
    metrics: prom.CollectorRegistry
    jobs: JobRunner

    async def save(self) -> None: ...


# The JSON API's one mapping from the command core's errors to HTTP statuses.
_STATUS_OF: tuple[tuple[type[RegistryError], int], ...] = (
    (StateUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (NodeNotFoundError, status.HTTP_404_NOT_FOUND),
    (NotPermittedError, status.HTTP_403_FORBIDDEN),
    (RegistryError, status.HTTP_400_BAD_REQUEST),
)


async def _too_deep(request: Request, exc: Exception) -> JSONResponse:
    # json.loads of a body nested thousands deep (issue 12.11): the client's fault.
    return JSONResponse({"detail": "JSON nested too deeply"}, status_code=400)


async def _registry_error(request: Request, exc: Exception) -> JSONResponse:
    code = next(code for kind, code in _STATUS_OF if isinstance(exc, kind))
    return JSONResponse({"detail": str(exc)}, status_code=code)


MAX_BODY = 1 << 20
_bearer = HTTPBearer(auto_error=False)


class NodeIn(BaseModel):
    """A node registering itself (or registered by a controller holding the token)."""

    port: int = Field(ge=1, le=65535, description="the node's service port (its key with ip)")
    ip: str | None = Field(
        None, max_length=64, description="the address to advertise; default: the caller's"
    )
    name: str = Field("", max_length=128)
    zone: str = Field("", max_length=64)
    bt_port: int = Field(0, ge=0, le=65535, description="BitTorrent listen port")
    api_url: str = Field("", max_length=512, description="the node's task API")
    files_url: str = Field("", max_length=512, description="the node's file server")
    status: int = Field(0, ge=0, le=MAX_STATUS, description="free connections now")


class NodeUpdate(BaseModel):
    name: str | None = Field(None, max_length=128)
    zone: str | None = Field(None, max_length=64)
    bt_port: int | None = Field(None, ge=0, le=65535)
    api_url: str | None = Field(None, max_length=512)
    files_url: str | None = Field(None, max_length=512)


class StatusIn(BaseModel):
    status: int = Field(ge=0, le=MAX_STATUS, description="free connections; also a heartbeat")


class NodesRequest(BaseModel):
    n: int = Field(ge=1, le=1000, description="how many nodes")
    zone: str | None = Field(None, max_length=64, description="prefer nodes in this zone")
    exclude: list[int] = Field(
        default_factory=list,
        max_length=1000,
        description="node ids never to hand out (the requester)",
    )


class NodeOut(BaseModel):
    id: int
    ip: str
    port: int
    name: str
    status: int
    zone: str
    bt_port: int
    api_url: str
    files_url: str


def _out(node: Node) -> NodeOut:
    return NodeOut.model_validate(node.as_dict())


def create_app(hub: HubAPI, handlers: FleetHandlers | None = None) -> FastAPI:
    app = FastAPI(
        title="SmartGet hub",
        version=__version__,
        description="The fleet's node registry, tracker, status collector and co2 relay.",
        exception_handlers={RegistryError: _registry_error, RecursionError: _too_deep},
    )

    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials if credentials is not None else None
        if not secret_matches(given, hub.token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong token: send 'Authorization: Bearer <token>' "
                "(the hub's --token, or the one in DATA_DIR/hub.token)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    api = APIRouter(prefix="/api", dependencies=[Depends(authorized)], tags=["registry"])

    async def get_node(node_id: int) -> Node:
        node = await hub.state.get_node(node_id)
        if node is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node has id {node_id}")
        return node

    @api.get("/nodes", response_model=list[NodeOut])
    async def list_nodes(
        zone: str | None = None,
        node_status: Annotated[int | None, Query(alias="status")] = None,
        available: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[NodeOut]:
        """Registered nodes, by id; filter by zone, exact status or availability."""
        nodes = await hub.state.list_nodes(
            zone=zone, status=node_status, available=available, limit=limit, offset=offset
        )
        return [_out(n) for n in nodes]

    @api.post("/nodes", status_code=status.HTTP_201_CREATED, response_model=NodeOut)
    async def register(body: NodeIn, request: Request) -> Any:
        """Register a node; 409 (with the existing id) if its ip and port are taken."""
        caller = FromOperator(request.client.host if request.client else "")
        info = body.model_dump(exclude={"ip", "port"})
        try:
            node = await hub.state.register(caller, body.port, ip=body.ip, **info)
        except NodeExistsError as exc:
            existing = await hub.state.find_node(body.ip or caller.ip, body.port)
            return JSONResponse({"detail": str(exc), "id": existing}, status_code=409)
        return _out(node)

    @api.get("/nodes/{node_id}", response_model=NodeOut)
    async def one_node(node_id: int) -> NodeOut:
        return _out(await get_node(node_id))

    @api.patch("/nodes/{node_id}", response_model=NodeOut)
    async def update(node_id: int, body: NodeUpdate) -> NodeOut:
        """Change a node's zone, name, ports or URLs."""
        await get_node(node_id)
        node = await hub.state.update_info(node_id, **body.model_dump(exclude_none=True))
        return _out(node)

    @api.put("/nodes/{node_id}/status", response_model=NodeOut)
    async def set_status(node_id: int, body: StatusIn) -> NodeOut:
        """The heartbeat: a node's free capacity. A zombie that calls this is back."""
        node = await hub.state.set_status(FromOperator(), node_id, body.status)
        return _out(node)

    @api.delete("/nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def deregister(node_id: int) -> Response:
        await hub.state.deregister(FromOperator(), node_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @api.post("/nodes/request", response_model=dict[str, list[NodeOut]])
    async def request_nodes(body: NodesRequest) -> dict[str, list[NodeOut]]:
        """Hand out up to n nodes with free capacity (an empty list if none is free).

        Most free capacity first, ties in turn, the zone's nodes first; each node handed
        out has its status lowered by one.
        """
        nodes = await hub.state.request_nodes(
            FromOperator(), body.n, zone=body.zone, exclude=body.exclude
        )
        return {"nodes": [_out(n) for n in nodes]}

    @api.get("/relay/dump", response_class=Response, tags=["relay"])
    async def relay_dump() -> Response:
        """A co2 satellite dump (XML) of the relay's satellites, notify_pass included:
        another relay takes it with ``--relay-import``. Keep it private."""
        return Response(hub.relay.export_dump(), media_type="text/xml")

    @api.get("/stats")
    async def stats() -> dict[str, Any]:
        """The fleet's registry figures, and the hubs serving it that are up (``hubs``)."""
        return {**await hub.state.statistics(), "hubs": await hub.state.hubs()}

    app.include_router(api)
    add_relay_routes(app, hub)  # POST /RPC2: co2's relay registry (hub/relay/)
    add_fleet_routes(app, hub, authorized, handlers)  # tracker, collector (hub/fleet.py)
    add_job_routes(app, hub.jobs, authorized)  # /api/jobs: push jobs (hub/jobs/)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "nodes": len(hub.registry)}

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(prom.generate_latest(hub.metrics), media_type=prom.CONTENT_TYPE_LATEST)

    add_console(app, hub)  # GET /, /login, /console/...: the live console (hub/console/)

    return app


async def start_http(hub: HubAPI, sock: socket.socket) -> FastLaneServer:
    """Serve the hub's app on ``sock`` in this loop, the hot routes in the fast lane."""
    handlers = FleetHandlers(hub)
    app = create_app(hub, handlers)
    # /RPC2 limits its own body so that too large is an XML-RPC fault (hub/relay/http.py).
    server = FastLaneServer(RPC2Passthrough(BodyLimit(app, MAX_BODY), app), handlers, sock)
    await server.start()
    return server
