"""The ``transcode`` mesh app: MSW's ffmpeg plugin (seed 001, plugins/ffmpeg.py).

Seed: "对分发主机启动server模式并指定文件名，对转码主机启动worker模式并指定分发主机的id" —
the distributing node runs the server role on a file, transcoding nodes run the worker
role naming the server's id. Both are the app ``transcode``; the packets between them:

=========================  ==============================================================
worker -> server           meaning
=========================  ==============================================================
``post``  ``op: ask``      give me a task (one packet per free slot)
``post``  ``op: alive``    still working on ``tasks: 3,4`` of ``job`` (every heartbeat)
``file``  ``op: result``   the transcoded ``task`` of ``job`` (a file Datapack)
``post``  ``op: failed``   ffmpeg failed on ``task``; ``reason`` says why
=========================  ==============================================================

=========================  ==============================================================
server -> worker           meaning
=========================  ==============================================================
``file``  ``op: task``     the segment of ``task`` (``kind`` video|audio), the job's
                           ``params`` (JSON) and ``re: <ask flag>``
``reply`` ``op: wait``     nothing pending now; ask again after ``retry`` seconds
``reply`` ``op: done``     the job is finished (or failed); ask again later
``reply`` ``op: ack``      a result was ``accepted: yes|no`` (``reason``); drop the file
=========================  ==============================================================

The job's state is the sans-IO :class:`~smartget.transcode.plan.Plan`; the server here
only moves files, runs ffmpeg and re-arms the plan's timer. Workers are trusted no
further than their results: every result is probed before it is accepted, and the
joined output is probed and decoded again before it replaces OUTPUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartget.errors import TranscodeError
from smartget.mesh.apps import App, AppContext, sha256_file
from smartget.mesh.datapack import Datapack, Received
from smartget.transcode import ffmpeg as ff
from smartget.transcode import plan as pl

__all__ = ["APP_NAME", "JobSettings", "ServerApp", "WorkerApp", "create_app", "partial_path"]

log = logging.getLogger(__name__)

APP_NAME = "transcode"
OUTPUT_TOLERANCE = 0.2  # the joined output's duration against the input's, seconds


def partial_path(output: Path) -> Path:
    """Where the output is written until it passes its checks (same dir, same suffix)."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


@dataclass
class JobSettings:
    """One job of ``smartget transcode serve``."""

    input: Path
    output: Path
    work_dir: Path
    params: ff.JobParams
    ffmpeg: str
    segment_seconds: float = 20.0
    lease_timeout: float = 600.0
    worker_timeout: float = 15.0
    max_failures: int = 3
    retry_after: float = 1.0
    ffmpeg_timeout: float = 3600.0  # split, join, checks
    preflight: bool = True
    offer_interval: float = 5.0  # seconds between offers of the job to direct peers
    decode_check: bool = False  # decode all of OUTPUT before accepting it (costs ~8 %)


class ServerApp(App):
    """The server role: split, hand out, check, join (one job, then it is done)."""

    name = APP_NAME
    verify_origin = True  # leases belong to proven node ids

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.job_id = secrets.token_hex(4)
        self.plan: pl.Plan | None = None
        self.input_probe: ff.Probe | None = None
        self.digests: dict[int, str] = {}
        self.outcome: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()  # the plan's timer may have moved
        self._results = 0
        self.phase = "starting"

    # -- what the CLI shows ---------------------------------------------------------------

    def progress(self, now: float) -> tuple[int, int, int]:
        """(tasks done, tasks, workers active)."""
        if self.plan is None:
            return 0, 0, 0
        return self.plan.done_count, len(self.plan.tasks), self.plan.active_workers(now)

    async def wait(self) -> Path:
        """OUTPUT once it is complete and checked; TranscodeError if the job failed."""
        return await asyncio.shield(self.outcome)

    def statistics(self) -> dict[str, Any]:
        stats = self.plan.statistics() if self.plan else {}
        return {"job": self.job_id, "phase": self.phase, **stats}

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, ctx: AppContext) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._packets(ctx))
                group.create_task(self._timer(ctx))
                try:
                    await self._prepare(ctx)
                except TranscodeError as exc:
                    self._finish(error=exc)
                except Exception as exc:
                    log.exception("transcode server failed")
                    self._finish(error=TranscodeError(f"internal error: {exc!r}"))
                # The packet loop goes on after the job: late asks are told "done".
        finally:
            partial_path(self.settings.output).unlink(missing_ok=True)

    def _finish(self, *, output: Path | None = None, error: BaseException | None = None) -> None:
        if self.outcome.done():
            return
        if error is not None:
            self.phase = "failed"
            self.outcome.set_exception(error)
        else:
            assert output is not None
            self.phase = "done"
            self.outcome.set_result(output)

    async def _prepare(self, ctx: AppContext) -> None:
        """Probe the input, try the parameters, cut segments, extract the audio."""
        s = self.settings
        self.phase = "probing input"
        if s.input.resolve() == s.output.resolve():
            raise TranscodeError("OUTPUT must not be INPUT")
        seg_dir = s.work_dir / "segments"
        seg_dir.mkdir(parents=True, exist_ok=True)
        (s.work_dir / "results").mkdir(exist_ok=True)
        # Each ffmpeg start costs ~0.1 s: run what does not depend on each other at once
        # (the audio extraction's result is ignored when INPUT turns out to have none).
        audio = seg_dir / "audio.mka"
        self.phase = "splitting"
        source, trial, split, extract = await asyncio.gather(
            self._probe_input(),
            ff.run_ffmpeg(ff.preflight_argv(s.ffmpeg, s.params), within=60)
            if s.preflight
            else _nothing(),
            ff.run_ffmpeg(
                ff.split_argv(s.ffmpeg, s.input, seg_dir, s.segment_seconds),
                within=s.ffmpeg_timeout,
            ),
            ff.run_ffmpeg(ff.extract_audio_argv(s.ffmpeg, s.input, audio), within=s.ffmpeg_timeout),
        )
        self.input_probe = source
        if trial is not None and trial.returncode != 0:
            raise TranscodeError(f"ffmpeg rejects the job's parameters: {trial.error_text()}")
        if split.returncode != 0:
            raise TranscodeError(f"cannot cut INPUT into segments: {split.error_text()}")
        sources = [(p, "video") for p in sorted(seg_dir.glob("seg*.mkv"))]
        if not sources:
            raise TranscodeError("ffmpeg cut INPUT into no segments")
        if source.audio_streams:
            if extract.returncode != 0:
                raise TranscodeError(f"cannot extract INPUT's audio: {extract.error_text()}")
            sources.append((audio, "audio"))
        probes = await asyncio.gather(
            *(ff.probe(s.ffmpeg, p, s.ffmpeg_timeout) for p, _ in sources)
        )
        digests = await asyncio.gather(*(asyncio.to_thread(sha256_file, p) for p, _ in sources))
        tasks = [
            pl.Task(i, kind, path.name, probe)
            for i, ((path, kind), probe) in enumerate(zip(sources, probes, strict=True))
        ]
        self.digests = {i: digest for i, (digest, _size) in enumerate(digests)}
        self.plan = pl.Plan(
            tasks,
            lease_timeout=s.lease_timeout,
            worker_timeout=s.worker_timeout,
            max_failures=s.max_failures,
            same_frames=s.params.same_frames,
        )
        self.phase = "transcoding"
        ctx.spawn(self._offer(ctx))
        log.info(
            "job %s: %d video segments%s, %.2f s, %d frames; waiting for workers",
            self.job_id,
            len(tasks) - (1 if source.audio_streams else 0),
            " and the audio" if source.audio_streams else "",
            source.duration,
            source.frames,
        )

    async def _offer(self, ctx: AppContext) -> None:
        """Tell direct peers about the job, again and again for peers linked later.

        Nodes running the worker role with no fixed server (``smartget mesh run --app
        transcode``) take the job from the offer; workers of this server ask at once.
        """
        while not self.outcome.done():
            ctx.send(Datapack("post", APP_NAME, {"to": "*", "op": "offer", "job": self.job_id}))
            await asyncio.sleep(self.settings.offer_interval)

    async def _probe_input(self) -> ff.Probe:
        s = self.settings
        try:
            source = await ff.probe(s.ffmpeg, s.input, s.ffmpeg_timeout)
        except TranscodeError as exc:
            raise TranscodeError(f"INPUT is not a video: {exc}") from None
        if source.video_streams < 1:
            raise TranscodeError(f"INPUT {s.input} has no video stream (it is not a video)")
        return source

    # -- packets --------------------------------------------------------------------------

    async def _packets(self, ctx: AppContext) -> None:
        while True:
            dp = await ctx.receive()
            op = dp.head.get("op", "")
            worker = dp.origin
            if worker is None or worker == ctx.node_id:
                if dp.file:
                    _discard(dp.file)
                continue  # unproven senders get no leases
            if dp.method in ("post", "get") and op == "ask":
                self._on_ask(ctx, dp, worker)
            elif self.plan is None or dp.head.get("job") != self.job_id:
                if dp.method == "file" and dp.file:
                    _discard(dp.file)
                    ctx.send(dp.reply(op="ack", accepted="no", reason="no such job"))
            elif op == "alive":
                self.plan.seen(worker, ctx.now())
                self._wake.set()
            elif dp.method == "file" and op == "result":
                self._on_result(ctx, dp, worker)
            elif op == "failed":
                index = _int(dp.head.get("task"))
                reason = dp.head.get("reason", "no reason given")[:1000]
                self._events(self.plan.fail(index, worker, f"ffmpeg failed: {reason}", ctx.now()))

    def _on_ask(self, ctx: AppContext, dp: Received, worker: str) -> None:
        plan, now = self.plan, ctx.now()
        if self.outcome.done() or (plan is not None and plan.finished):
            ctx.send(dp.reply(op="done", job=self.job_id))
            return
        if plan is None:
            ctx.send(dp.reply(op="wait", retry=str(self.settings.retry_after)))
            return
        task = plan.assign(worker, now)
        self._wake.set()
        if task is None:
            ctx.send(dp.reply(op="wait", retry=str(self.settings.retry_after)))
            return
        path = self.settings.work_dir / "segments" / task.name
        head = {
            "to": worker,
            "filename": f"transcode/{self.job_id}/{task.index}.{task.handouts}{path.suffix}",
            "sha256": self.digests[task.index],
            "op": "task",
            "job": self.job_id,
            "task": str(task.index),
            "kind": task.kind,
            "params": self.settings.params.to_json(),
            "timeout": f"{self.settings.lease_timeout:g}",
        }
        if dp.flag:
            head["re"] = dp.flag
        ctx.send(Datapack("file", APP_NAME, head, file=os.fspath(path)))
        log.debug("job %s: task %d to %s", self.job_id, task.index, worker)

    def _on_result(self, ctx: AppContext, dp: Received, worker: str) -> None:
        assert self.plan is not None
        assert dp.file is not None
        index = _int(dp.head.get("task"))
        if self.plan.wants_result(index) is None:
            _discard(dp.file)
            ctx.send(dp.reply(op="ack", accepted="no", reason="not needed"))
            return
        self._results += 1
        name = f"res{index:05d}-{self._results}.mkv"
        dest = self.settings.work_dir / "results" / name
        os.replace(dp.file, dest)  # out of the shared receive root, under our own name
        ctx.spawn(self._check(ctx, dp, worker, index, dest))

    async def _check(
        self, ctx: AppContext, dp: Received, worker: str, index: int, path: Path
    ) -> None:
        assert self.plan is not None
        try:
            probe = await ff.probe(self.settings.ffmpeg, path, within=300)
        except TranscodeError as exc:
            events = self.plan.fail(index, worker, f"result rejected: {exc}", ctx.now())
        else:
            events = self.plan.accept(index, worker, path.name, probe, ctx.now())
        accepted = any(isinstance(e, pl.TaskAccepted) for e in events)
        if not accepted:
            _discard(path)
        reason = next((e.reason for e in events if isinstance(e, pl.TaskFailed)), "")
        ctx.send(dp.reply(op="ack", accepted="yes" if accepted else "no", reason=_line(reason)))
        self._events(events)
        if any(isinstance(e, pl.JobDone) for e in events):
            ctx.spawn(self._join())

    def _events(self, events: list[pl.Event]) -> None:
        self._wake.set()
        for event in events:
            match event:
                case pl.TaskAccepted(task, worker):
                    log.info("job %s: task %d from %s accepted", self.job_id, task.index, worker)
                case pl.TaskFailed(task, worker, reason):
                    log.warning(
                        "job %s: task %d on %s: %s", self.job_id, task.index, worker, reason
                    )
                case pl.LeaseExpired(task, worker, reason):
                    log.warning(
                        "job %s: task %d on %s: %s; handing it out again",
                        self.job_id, task.index, worker, reason,
                    )  # fmt: skip
                case pl.JobFailed(reason):
                    self._finish(error=TranscodeError(f"job failed: {reason}"))

    async def _timer(self, ctx: AppContext) -> None:
        """Re-arm the plan's one timer: sleep until it is due or the plan changes."""
        while True:
            self._wake.clear()
            deadline = self.plan.get_timer() if self.plan else None
            if deadline is not None and deadline <= ctx.now():
                assert self.plan is not None
                self._events(self.plan.handle_timer(ctx.now()))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()

    # -- join -----------------------------------------------------------------------------

    async def _join(self) -> None:
        try:
            self._finish(output=await self._join_and_check())
        except TranscodeError as exc:
            self._finish(error=exc)
        except Exception as exc:
            log.exception("join failed")
            self._finish(error=TranscodeError(f"internal error while joining: {exc!r}"))

    async def _join_and_check(self) -> Path:
        s, plan, source = self.settings, self.plan, self.input_probe
        assert plan is not None
        assert source is not None
        self.phase = "joining"
        results = s.work_dir / "results"
        videos = [t for t in plan.tasks if t.kind == "video"]
        audio = next((t for t in plan.tasks if t.kind == "audio"), None)
        list_path = results / "list.txt"
        list_path.write_text(ff.concat_list([t.result or "" for t in videos]), encoding="utf-8")
        partial = partial_path(s.output)
        audio_path = results / audio.result if audio and audio.result else None
        joined = await ff.run_ffmpeg(
            ff.join_argv(s.ffmpeg, list_path, audio_path, partial), within=s.ffmpeg_timeout
        )
        if joined.returncode != 0:
            raise TranscodeError(
                f"cannot join the segments into {s.output.name}: {joined.error_text()}"
            )
        self.phase = "checking output"
        out = await ff.probe(s.ffmpeg, partial, s.ffmpeg_timeout)
        frames = sum(t.result_probe.frames for t in videos if t.result_probe)
        problems = []
        if abs(out.duration - source.duration) > OUTPUT_TOLERANCE:
            problems.append(f"lasts {out.duration:.3f} s, INPUT {source.duration:.3f} s")
        if out.frames != frames:
            problems.append(f"has {out.frames} frames, the segments {frames}")
        if plan.same_frames and out.frames != source.frames:
            problems.append(f"has {out.frames} frames, INPUT {source.frames}")
        if out.audio_streams != source.audio_streams or out.video_streams != 1:
            problems.append(f"has {out.video_streams} video, {out.audio_streams} audio streams")
        if problems:
            raise TranscodeError(f"the joined output fails its checks: {'; '.join(problems)}")
        if s.decode_check:
            self.phase = "decoding output"
            await ff.decode_check(s.ffmpeg, partial, s.ffmpeg_timeout)
        os.replace(partial, s.output)
        log.info(
            "job %s: %s complete (%.2f s, %d frames)",
            self.job_id,
            s.output,
            out.duration,
            out.frames,
        )
        return s.output


async def _nothing() -> None:
    return None


def _int(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return -1


# -- worker ------------------------------------------------------------------------------


class WorkerApp(App):
    """The worker role: ask for tasks, transcode them, send them back, ask again."""

    name = APP_NAME
    verify_origin = True  # tasks are taken only from the proven server

    def __init__(
        self,
        server: str | None,
        *,
        ffmpeg: str | None = None,
        concurrency: int = 2,
        heartbeat: float = 2.0,
        ask_timeout: float = 30.0,
        idle_retry: float = 2.0,
        threads: int = 0,
        once: bool = False,
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
        self.ffmpeg = self.ffmpeg or ctx.settings.get("ffmpeg") or ff.default_ffmpeg()
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
                _discard(dp.file)
            return
        now = ctx.now()
        self._asks.pop(dp.head.get("re", ""), None)
        if dp.method == "file" and op == "task":
            assert dp.file is not None
            key = (dp.head.get("job", ""), _int(dp.head.get("task")))
            if key in self._busy:
                _discard(dp.file)
                return
            self._busy[key] = group.create_task(self._work(ctx, dp, key, work))
        elif op == "wait":
            retry = _float(dp.head.get("retry"), 1.0)
            self._backoff_until = max(self._backoff_until, now + min(max(retry, 0.05), 60.0))
        elif op == "done":
            self._backoff_until = now + self.idle_retry
            if self.once and not self._busy:
                self.finished.set()
        elif op == "ack":
            path = self._unacked.pop((dp.head.get("job", ""), dp.head.get("task", "")), None)
            if path is not None:
                _discard(path)
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
            dp = ctx.send(Datapack("post", APP_NAME, {"to": self.server, "op": "ask"}))
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
                    tasks = ",".join(str(i) for j, i in self._busy if j == job)
                    ctx.send(
                        Datapack(
                            "post",
                            APP_NAME,
                            {"to": self.server, "op": "alive", "job": job, "tasks": tasks},
                        )
                    )
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
            timeout = min(_float(dp.head.get("timeout"), 3600.0), 24 * 3600.0)
            argv = ff.transcode_argv(self.ffmpeg, params, kind, source, out, self.threads)
            result = await ff.run_ffmpeg(argv, within=timeout, cwd=work)
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
            _discard(out)
            ctx.log.warning("task %d of job %s failed: %s", index, job, exc)
            ctx.send(
                Datapack("post", APP_NAME, {**head, "op": "failed", "reason": _line(str(exc))})
            )
        finally:
            _discard(source)
            del self._busy[key]
            self._wake.set()


def _discard(path: str | Path) -> None:
    """Remove a file we own; already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _float(text: str | None, default: float) -> float:
    try:
        value = float(text or "")
    except ValueError:
        return default
    return value if value == value and value >= 0 else default  # not NaN


def _line(text: str) -> str:
    return " ".join(text.split())[:1000]


def create_app() -> App:
    """For ``--apps-dir`` or the ``smartget.mesh_apps`` entry point: a worker that takes
    its server from the app's settings (``server``), or from the first ``op: offer``."""
    return WorkerApp(None)
