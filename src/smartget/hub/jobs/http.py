"""``/api/jobs``: push jobs over the hub's JSON API (the token, like every ``/api`` route).

* ``POST /api/jobs`` ``{"urls": [...], "zones": [...], "nodes": N}`` (or ``"node_ids"``;
  optional ``"files": [{"url", "sha256"}]``, ``"priority"``, ``"deadline"`` seconds,
  ``"upload_limit"``, ``"seed"``, ``"attempts"``, ``"pin"``, ``"striped"``) -> 201 with
  the job, queued and saved.
* ``GET /api/jobs[?state=S]``, ``GET /api/jobs/{id}``: the job with its files and, per
  node, its state, reason and bytes by source.
* ``POST /api/jobs/{id}/cancel``: what is not done is stopped on every node.
* ``GET /api/jobs/{id}/events?after=SEQ&wait=S``: the job's events newer than SEQ,
  waiting up to S seconds (60 at most) for the first one: a long-poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel, Field

from smartget.errors import JobError, JobNotFoundError
from smartget.hub.jobs.model import MAX_URLS, Job, parse_spec
from smartget.hub.jobs.runner import MAX_WAIT, JobRunner
from smartget.hub.jobs.shared import InboxFull

__all__ = ["JobIn", "add_job_routes"]


class FileIn(BaseModel):
    url: str = Field(max_length=2048)
    sha256: str = Field("", max_length=64)


class JobIn(BaseModel):
    urls: list[Annotated[str, Field(max_length=2048)]] = Field(
        default_factory=list, max_length=MAX_URLS, description="origin URLs"
    )
    files: list[FileIn] = Field(
        default_factory=list, max_length=MAX_URLS, description="URLs with their SHA-256"
    )
    zones: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=100)
    nodes: int | None = Field(None, ge=1, description="how many nodes, the seed included")
    node_ids: list[int] = Field(default_factory=list, max_length=100_000)
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    deadline: float | None = Field(None, gt=0, description="seconds from the job's start")
    upload_limit: int = Field(0, ge=0, description="bytes/s per node (0: the node's own)")
    seed: str = Field("", max_length=128, description="nodeid or IP of the seed")
    attempts: int = Field(2, ge=1, le=10, description="per copy, before giving up")
    pin: float = Field(0, ge=0, description="seconds the nodes keep the files after the job")
    striped: bool = Field(
        True,
        description="every node fetches its own stripe from the origin at once and the "
        "torrent is made from their digests (false: the seed fetches the whole file first)",
    )


def add_job_routes(app: FastAPI, runner: JobRunner, authorized: Callable[..., Any]) -> None:
    api = APIRouter(prefix="/api/jobs", dependencies=[Depends(authorized)], tags=["jobs"])

    async def one(job_id: str) -> Job:
        try:
            return await runner.job(job_id)
        except JobNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None

    @api.post("", status_code=status.HTTP_201_CREATED)
    async def submit(body: JobIn) -> dict[str, Any]:
        """Queue a push job; it is saved before this answers, and runs in the hub."""
        try:
            spec = parse_spec(
                urls=body.urls,
                files=[f.model_dump() for f in body.files],
                zones=body.zones,
                nodes=body.nodes,
                node_ids=body.node_ids,
                priority=body.priority,
                deadline=body.deadline,
                upload_limit=body.upload_limit,
                seed=body.seed,
                attempts=body.attempts,
                pin=body.pin,
                striped=body.striped,
            )
        except JobError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        try:
            job = await runner.submit(spec)
        except InboxFull as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        return job.view()

    @api.get("")
    async def list_jobs(
        state: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        return [j.summary() for j in (await runner.jobs(state))[:limit]]

    @api.get("/{job_id}")
    async def show(job_id: str) -> dict[str, Any]:
        view: dict[str, Any] = (await one(job_id)).view()
        return view

    @api.post("/{job_id}/cancel")
    async def cancel(job_id: str) -> dict[str, Any]:
        """Cancel: what is not done is stopped on its node; a finished job stays as it is."""
        await one(job_id)
        try:
            job = await runner.cancel(job_id)
        except InboxFull as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        return job.view()

    @api.get("/{job_id}/events")
    async def events(
        job_id: str,
        after: Annotated[int, Query(ge=0)] = 0,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0,
    ) -> dict[str, Any]:
        """Events newer than ``after``, waiting up to ``wait`` s for the first (long-poll)."""
        await one(job_id)
        found = await runner.wait_events(job_id, after, wait)
        job = await one(job_id)
        return {
            "id": job_id,
            "state": job.state.value,
            "last_seq": job.last_seq,
            "events": [e.to_dict() for e in found],
        }

    app.include_router(api)
