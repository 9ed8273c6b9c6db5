"""The worker role of the ``transcode`` app: ask for tasks, transcode, send back, ask again.

A worker takes tasks only from its server (proven by TLS or signature); with no fixed
server it takes the first one that offers a job. It keeps one ask in flight per free
slot, sends ``alive`` every heartbeat while it works, and deletes each result once the
server acknowledged it. The packets are drawn in messages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartget.config import REQUIRED, setting
from smartget.errors import TranscodeError
from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Received
from smartget.transcode import ffmpeg as ff
from smartget.transcode import messages as msg
from smartget.transcode.messages import APP_NAME
from smartget.transcode.runner import default_ffmpeg, discard, run_ffmpeg

__all__ = ["WorkerApp"]


@dataclass(frozen=True)
class WorkerSettings:
    """What ``smartget transcode work`` asks of :class:`WorkerApp` (its keywords)."""

    server: str = setting(REQUIRED, "The node id of the server (its certificate's).")
    concurrency: int = setting(2, "Tasks transcoded at once.", min=1, max=64)
    threads: int = setting(0, "ffmpeg -threads per task (0: ffmpeg decides).", min=0)
    once: bool = setting(False, "Exit 0 when the server says its job is done.")


_DEFAULTS = WorkerSettings(server="")


class WorkerApp(App):
    """The worker role: ask for tasks, transcode them, send them back, ask again."""

    name = APP_NAME
    verify_origin = True  # tasks are taken only from the proven server

    def __init__(
        self,
        server: str | None,
        *,
        ffmpeg: str | None = None,
        concurrency: int = _DEFAULTS.concurrency,
        heartbeat: float = 2.0,
        ask_timeout: float = 30.0,
        idle_retry: float = 2.0,
        threads: int = _DEFAULTS.threads,
        once: bool = _DEFAULTS.once,
    ) -> None:
        self.server = server
        self.ffmpeg = ffmpeg
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.ask_timeout = ask_timeout
        self.idle_retry = idle_retry
        self.threads = threads
        self.once = once
        self.finished = asyncio.Event()  # with once: the server said its job is done
        self._asks: dict[str, float] = {}  # flag -> deadline
        self._busy: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._unacked: dict[tuple[str, str], Path] = {}  # (job, task) -> result file
        self._backoff_until = 0.0
        self._wake = asyncio.Event()
        self.stats = {"tasks": 0, "failed": 0, "accepted": 0, "rejected": 0}

    def statistics(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "busy": len(self._busy),
            "asks": len(self._asks),
            **self.stats,
        }

    async def run(self, ctx: AppContext) -> None:
        self.server = self.server or ctx.settings.get("server")
        self.ffmpeg = self.ffmpeg or ctx.settings.get("ffmpeg") or default_ffmpeg()
        work = ctx.data_dir / "work"
        shutil.rmtree(work, ignore_errors=True)  # results of an earlier run
        work.mkdir(parents=True)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._tick(ctx))
            while True:
                dp = await ctx.receive()
                self._on_packet(ctx, group, dp, work)
                self._top_up(ctx)

    def _on_packet(
        self, ctx: AppContext, group: asyncio.TaskGroup, dp: Received, work: Path
    ) -> None:
        op = dp.head.get("op", "")
        if op == "offer" and dp.origin and self.server in (None, dp.origin):
            self.server = dp.origin  # a server announced a job: ask at once
            self._backoff_until = 0.0
            return
        if dp.origin != self.server or self.server is None:
            if dp.file:
                discard(dp.file)
            return
        now = ctx.now()
        self._asks.pop(dp.head.get("re", ""), None)
        if dp.method == "file" and op == "task":
            assert dp.file is not None
            key = (dp.head.get("job", ""), msg.header_int(dp.head, "task"))
            if key in self._busy:
                discard(dp.file)
                return
            self._busy[key] = group.create_task(self._work(ctx, dp, key, work))
        elif op == "wait":
            retry = msg.header_float(dp.head, "retry", 1.0)
            self._backoff_until = max(self._backoff_until, now + min(max(retry, 0.05), 60.0))
        elif op == "done":
            self._backoff_until = now + self.idle_retry
            if self.once and not self._busy:
                self.finished.set()
        elif op == "ack":
            path = self._unacked.pop((dp.head.get("job", ""), dp.head.get("task", "")), None)
            if path is not None:
                discard(path)
            self.stats["accepted" if dp.head.get("accepted") == "yes" else "rejected"] += 1
        elif dp.head.get("error") == "refused":
            ctx.log.warning("server %s refused us: %s", self.server, dp.body[:300])
            self._backoff_until = now + self.idle_retry

    def _top_up(self, ctx: AppContext) -> None:
        """One ask per free slot, unless the server told us to wait."""
        now = ctx.now()
        if self.server is None or now < self._backoff_until or self.finished.is_set():
            return
        while len(self._busy) + len(self._asks) < self.concurrency:
            dp = ctx.send(msg.ask(self.server))
            self._asks[dp.flag] = now + self.ask_timeout

    async def _tick(self, ctx: AppContext) -> None:
        """Heartbeats while working; forget unanswered asks; ask again after a wait."""
        next_alive = 0.0
        while True:
            now = ctx.now()
            for flag, deadline in list(self._asks.items()):
                if deadline <= now:
                    del self._asks[flag]
            if self._busy and self.server and now >= next_alive:
                jobs = {job for job, _ in self._busy}
                for job in jobs:
                    ctx.send(msg.alive(self.server, job, [i for j, i in self._busy if j == job]))
                next_alive = now + self.heartbeat
            self._top_up(ctx)
            due = [next_alive if self._busy else now + self.heartbeat, *self._asks.values()]
            if self._backoff_until > now:
                due.append(self._backoff_until)
            wake_at = min(due)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake_at):
                    await self._wake.wait()

    async def _work(self, ctx: AppContext, dp: Received, key: tuple[str, int], work: Path) -> None:
        job, index = key
        assert dp.file is not None
        assert self.ffmpeg is not None
        assert self.server is not None
        source = Path(dp.file)
        out = work / f"{job}-{index}-{secrets.token_hex(3)}.mkv"
        head = {"to": self.server, "job": job, "task": str(index)}
        try:
            params = ff.JobParams.from_json(dp.head.get("params", "{}"))
            kind = "audio" if dp.head.get("kind") == "audio" else "video"
            timeout = min(msg.header_float(dp.head, "timeout", 3600.0), 24 * 3600.0)
            argv = ff.transcode_argv(self.ffmpeg, params, kind, source, out, self.threads)
            result = await run_ffmpeg(argv, within=timeout, cwd=work)
            if result.returncode != 0:
                raise TranscodeError(result.error_text())
            self.stats["tasks"] += 1
            self._unacked[(job, str(index))] = out
            await ctx.send_file(
                out, app=APP_NAME, filename=f"transcode/{job}/{ctx.node_id}-{index}.mkv",
                op="result", **head,
            )  # fmt: skip
        except TranscodeError as exc:
            self.stats["failed"] += 1
            discard(out)
            ctx.log.warning("task %d of job %s failed: %s", index, job, exc)
            ctx.send(msg.failed(self.server, job, index, str(exc)))
        finally:
            discard(source)
            del self._busy[key]
            self._wake.set()
