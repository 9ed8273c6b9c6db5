"""Push jobs shared by the hubs of one fleet on Redis (issue 13): one runs them, any serves.

With ``--state redis://`` the hub holding the fleet's lease (the one that sweeps; see
:mod:`smartget.hub.state.lease`) is the jobs' *leader*: it alone runs the
:class:`~smartget.hub.jobs.core.JobBook` and writes each job's record and events here.
Every other hub answers ``/api/jobs`` from these keys and hands what changes a job
(a submit, a cancel) to the leader through a bounded request list. When the leader
dies, the next hub to take the lease loads every job from here, as a hub restarting on
SQLite does, and goes on: what was in flight is asked again (the nodes answer
"already" for running downloads).

Keys (``P`` is the fleet's prefix, ``sg:{fleet}:``: one hash tag, so each pipeline
below touches one Redis Cluster slot):

=====================  =====  ===============================================
``P jobs``             hash   job id -> its record (``Job.to_dict``, JSON)
``P jobs:ev:<id>``     list   the job's events (JSON), the last ``max_events``
``P jobs:inbox``       list   requests to the leader: submit, cancel (JSON)
=====================  =====  ===============================================

Bounds: the leader keeps ``max_jobs`` jobs and deletes the keys of those it forgets;
events are trimmed to ``max_events`` a job; the inbox holds at most ``MAX_REQUESTS``
requests (a submit past it is refused: 503, try again).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from smartget.errors import JobError

if TYPE_CHECKING:
    from smartget.hub.state.redisengine import Client

__all__ = ["MAX_REQUESTS", "InboxFull", "SharedJobs"]

MAX_REQUESTS = 1000  # requests waiting for the leader, at most
TAKE = 100  # requests the leader takes at a time


class InboxFull(JobError):
    """The leader is behind on requests (or there is none): try again later."""


# Push a request unless the list is full: one atomic step.
_PUSH_BOUNDED = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""


class SharedJobs:
    """The jobs' records, events and requests in Redis."""

    def __init__(
        self,
        client: Client,
        prefix: str,
        max_events: int,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self.client = client
        self.max_events = max_events
        self.max_requests = max_requests
        self.jobs_key = f"{prefix}jobs"
        self.events_prefix = f"{prefix}jobs:ev:"
        self.inbox_key = f"{prefix}jobs:inbox"
        self._push = client.register_script(_PUSH_BOUNDED)

    async def save(
        self,
        jobs: list[dict[str, Any]],
        events: list[tuple[str, int, dict[str, Any]]],
        forgotten: list[str],
    ) -> None:
        """Changed jobs (whole records), new events, forgotten jobs: one transaction."""
        # MULTI/EXEC on a Redis Cluster too: redis-py's cluster pipeline runs a
        # transaction when all its keys are in one slot, as these are ({fleet}).
        pipe = self.client.pipeline(transaction=True)
        if jobs:
            pipe.hset(self.jobs_key, mapping={j["id"]: json.dumps(j) for j in jobs})
        trimmed = set()
        for job_id, _seq, body in events:
            pipe.rpush(self.events_prefix + job_id, json.dumps(body))
            trimmed.add(job_id)
        for job_id in sorted(trimmed):
            pipe.ltrim(self.events_prefix + job_id, -self.max_events, -1)
        if forgotten:
            pipe.hdel(self.jobs_key, *forgotten)
            pipe.delete(*(self.events_prefix + job_id for job_id in forgotten))
        await pipe.execute()

    async def load(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Every job (in submission order) and its events: what a new leader starts from."""
        raw = await self.client.hgetall(self.jobs_key)
        docs = sorted((json.loads(v) for v in raw.values()), key=lambda d: d["order"])
        pipe = self.client.pipeline(transaction=False)
        for doc in docs:
            pipe.lrange(self.events_prefix + doc["id"], 0, -1)
        lists = await pipe.execute() if docs else []
        events = {doc["id"]: _unique_events(items) for doc, items in zip(docs, lists, strict=True)}
        return docs, events

    async def job(self, job_id: str) -> dict[str, Any] | None:
        raw = await self.client.hget(self.jobs_key, job_id)
        return None if raw is None else dict(json.loads(raw))

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        return _unique_events(await self.client.lrange(self.events_prefix + job_id, 0, -1))

    async def docs(self) -> list[dict[str, Any]]:
        raw = await self.client.hgetall(self.jobs_key)
        return [json.loads(v) for v in raw.values()]

    async def request(self, entry: dict[str, Any]) -> None:
        """Hand a submit or a cancel to the leader."""
        pushed = await self._push(
            keys=[self.inbox_key], args=[json.dumps(entry), self.max_requests]
        )
        if not pushed:
            raise InboxFull(
                f"{self.max_requests} job requests wait for the hub that runs the jobs; try again"
            )

    async def take_requests(self) -> list[dict[str, Any]]:
        """The leader's next requests, oldest first (taken: no other hub sees them)."""
        raw: list[bytes] | None = await self.client.lpop(self.inbox_key, TAKE)  # type: ignore[assignment]
        return [json.loads(r) for r in raw or ()]


def _unique_events(items: list[Any]) -> list[dict[str, Any]]:
    """Events by seq, each once (a leader that took over may write one again)."""
    by_seq = {}
    for item in items:
        event = json.loads(item)
        by_seq[event["seq"]] = event
    return [by_seq[seq] for seq in sorted(by_seq)]
