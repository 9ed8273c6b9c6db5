"""The server role of the ``transcode`` app: split, hand out, check, join (one job).

The job's state is the sans-IO :class:`~smartget.transcode.plan.Plan`; the server here
only moves files, runs ffmpeg (runner.py) and re-arms the plan's timer. Workers are
trusted no further than their results: every result is probed before it is accepted,
and the joined output is probed (and with ``decode_check`` decoded) again before it
replaces OUTPUT. The packets are drawn in messages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartget.config import setting
from smartget.errors import TranscodeError
from smartget.mesh.apps import App, AppContext, sha256_file
from smartget.mesh.datapack import Datapack, Received
from smartget.transcode import ffmpeg as ff
from smartget.transcode import messages as msg
from smartget.transcode import plan as pl
from smartget.transcode import runner
from smartget.transcode.messages import APP_NAME
from smartget.transcode.runner import discard

__all__ = ["JobSettings", "ServerApp", "partial_path"]

log = logging.getLogger(__name__)

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
    segment_seconds: float = setting(
        20.0,
        "Target segment length; cuts fall on the first keyframe after each multiple.",
        min=0.5,
    )
    lease_timeout: float = setting(
        600.0,
        "A task not returned this long after it was handed out goes out again.",
        min=1,
    )
    worker_timeout: float = setting(
        15.0, "A worker silent this long is gone; its tasks go out again.", min=0.5
    )
    max_failures: int = setting(3, "Failures of one task before the job fails.", min=1)
    retry_after: float = 1.0
    ffmpeg_timeout: float = 3600.0  # split, join, checks
    preflight: bool = True
    offer_interval: float = 5.0  # seconds between offers of the job to direct peers
    decode_check: bool = setting(
        False,
        "Also decode all of OUTPUT before accepting it (every job probes it: streams, "
        "duration, frames; a full decode costs about 8% more time).",
        flag="--decode-check/--no-decode-check",
    )


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
            runner.run_ffmpeg(ff.preflight_argv(s.ffmpeg, s.params), within=60)
            if s.preflight
            else _nothing(),
            runner.run_ffmpeg(
                ff.split_argv(s.ffmpeg, s.input, seg_dir, s.segment_seconds),
                within=s.ffmpeg_timeout,
            ),
            runner.run_ffmpeg(
                ff.extract_audio_argv(s.ffmpeg, s.input, audio), within=s.ffmpeg_timeout
            ),
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
            *(runner.probe(s.ffmpeg, p, s.ffmpeg_timeout) for p, _ in sources)
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
            ctx.send(msg.offer(self.job_id))
            await asyncio.sleep(self.settings.offer_interval)

    async def _probe_input(self) -> ff.Probe:
        s = self.settings
        try:
            source = await runner.probe(s.ffmpeg, s.input, s.ffmpeg_timeout)
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
                    discard(dp.file)
                continue  # unproven senders get no leases
            if dp.method in ("post", "get") and op == "ask":
                self._on_ask(ctx, dp, worker)
            elif self.plan is None or dp.head.get("job") != self.job_id:
                if dp.method == "file" and dp.file:
                    discard(dp.file)
                    ctx.send(dp.reply(op="ack", accepted="no", reason="no such job"))
            elif op == "alive":
                self.plan.seen(worker, ctx.now())
                self._wake.set()
            elif dp.method == "file" and op == "result":
                self._on_result(ctx, dp, worker)
            elif op == "failed":
                index = msg.header_int(dp.head, "task")
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
        head = msg.task_head(
            worker=worker,
            job=self.job_id,
            task=task.index,
            handout=task.handouts,
            kind=task.kind,
            suffix=path.suffix,
            sha256=self.digests[task.index],
            params_json=self.settings.params.to_json(),
            lease_timeout=self.settings.lease_timeout,
            ask_flag=dp.flag,
        )
        ctx.send(Datapack("file", APP_NAME, head, file=os.fspath(path)))
        log.debug("job %s: task %d to %s", self.job_id, task.index, worker)

    def _on_result(self, ctx: AppContext, dp: Received, worker: str) -> None:
        assert self.plan is not None
        assert dp.file is not None
        index = msg.header_int(dp.head, "task")
        if self.plan.wants_result(index) is None:
            discard(dp.file)
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
            probe = await runner.probe(self.settings.ffmpeg, path, within=300)
        except TranscodeError as exc:
            events = self.plan.fail(index, worker, f"result rejected: {exc}", ctx.now())
        else:
            events = self.plan.accept(index, worker, path.name, probe, ctx.now())
        accepted = any(isinstance(e, pl.TaskAccepted) for e in events)
        if not accepted:
            discard(path)
        reason = next((e.reason for e in events if isinstance(e, pl.TaskFailed)), "")
        ctx.send(
            dp.reply(op="ack", accepted="yes" if accepted else "no", reason=msg.one_line(reason))
        )
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
        joined = await runner.run_ffmpeg(
            ff.join_argv(s.ffmpeg, list_path, audio_path, partial), within=s.ffmpeg_timeout
        )
        if joined.returncode != 0:
            raise TranscodeError(
                f"cannot join the segments into {s.output.name}: {joined.error_text()}"
            )
        self.phase = "checking output"
        out = await runner.probe(s.ffmpeg, partial, s.ffmpeg_timeout)
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
            await runner.decode_check(s.ffmpeg, partial, s.ffmpeg_timeout)
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
