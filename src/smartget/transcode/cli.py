"""``smartget transcode serve|work``: a transcoding farm on mesh nodes (issue 8)."""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from smartget.config import HOSTPORT, common_options, setup_logging
from smartget.errors import SmartGetError
from smartget.lifecycle import on_stop_signals

log = logging.getLogger("smartget.transcode")

DIR = click.Path(file_okay=False, path_type=Path)
FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.group()
def transcode() -> None:
    """Distributed ffmpeg over the mesh (MSW's ffmpeg plugin).

    One node serves a job: `smartget transcode serve INPUT OUTPUT --tls-dir NODE_DIR
    --listen HOST:PORT` cuts INPUT into segments on keyframes, hands them to workers,
    checks and joins what comes back. Worker nodes run `smartget transcode work --server
    ID --tls-dir NODE_DIR --peers FILE`. Certificates come from `smartget mesh ca`.
    """


def _mesh_options(default_listen: str) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(
            [
                click.option(
                    "--tls-dir", type=DIR, required=True, help="NODE_DIR from `mesh ca issue`."
                ),
                click.option(
                    "--listen",
                    type=HOSTPORT,
                    default=default_listen,
                    show_default=True,
                    help="Address this mesh node accepts links on.",
                ),
                click.option(
                    "--data-dir",
                    type=DIR,
                    default=None,
                    help="Received files and work files [default: a temporary directory, "
                    "removed at exit].",
                ),
                click.option(
                    "--ffmpeg",
                    default=None,
                    help="ffmpeg binary [default: the one in the imageio-ffmpeg wheel].",
                ),
                click.option(
                    "--heartbeat",
                    type=click.FloatRange(min=0.05),
                    default=2.0,
                    show_default=True,
                    help="Seconds between mesh heartbeats and redials (and worker 'alive').",
                ),
            ]
        ):
            func = option(func)
        return func

    return decorate


def _mesh_settings(
    tls_dir: Path,
    data_dir: Path,
    listen: tuple[str, int],
    peers: Path | None,
    heartbeat: float,
    app: Any,
) -> Any:
    from smartget.mesh.settings import MeshSettings, read_peers_file

    return MeshSettings(
        tls_dir=tls_dir,
        data_dir=data_dir,
        listen=listen,
        peers=read_peers_file(peers) if peers else [],
        apps=[],
        extra_apps={"transcode": app},
        heartbeat=heartbeat,
        retry_interval=0.5,  # asks wait for a link that is coming: retry soon
        retry_count=240,
    )


def _run(main: Callable[[Path], Any], data_dir: Path | None) -> int:
    """Run ``main(data_dir)`` in a loop; a temporary data dir is removed afterwards."""
    temp = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="smartget-transcode-")) if temp else data_dir
    assert directory is not None
    try:
        status = asyncio.run(main(directory))
        assert isinstance(status, int)
        return status
    finally:
        if temp:
            shutil.rmtree(directory, ignore_errors=True)


@transcode.command()
@click.argument("input_path", metavar="INPUT", type=FILE)
@click.argument("output", metavar="OUTPUT", type=click.Path(dir_okay=False, path_type=Path))
@_mesh_options("0.0.0.0:20130")
@click.option("--peers", type=FILE, default=None, help="address.txt: workers to dial (optional).")
@click.option(
    "--segment-seconds",
    type=click.FloatRange(min=0.5),
    default=20.0,
    show_default=True,
    help="Target segment length; cuts fall on the first keyframe after each multiple.",
)
@click.option("--vcodec", default="libx264", show_default=True, help="Video encoder.")
@click.option(
    "--scale", default=None, metavar="W:H", help="Resize, e.g. 1280:720 (-1 keeps ratio)."
)
@click.option("--acodec", default="aac", show_default=True, help="Audio encoder.")
@click.option(
    "--extra-args",
    default="",
    metavar="'ARGS'",
    help="More encoder options as one quoted string, e.g. '-preset fast -crf 23' "
    "(no paths, URLs or file options: workers refuse them).",
)
@click.option(
    "--lease-timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="A task not returned this long after it was handed out goes out again.",
)
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=0.5),
    default=15.0,
    show_default=True,
    help="A worker silent this long is gone; its tasks go out again.",
)
@click.option("--max-failures", type=click.IntRange(min=1), default=3, show_default=True,
              help="Failures of one task before the job fails.")  # fmt: skip
@click.option(
    "--decode-check/--no-decode-check",
    default=False,
    show_default=True,
    help="Also decode all of OUTPUT before accepting it (every job probes it: streams, "
    "duration, frames; a full decode costs about 8% more time).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a TTY].")
@common_options
def serve(
    input_path: Path,
    output: Path,
    tls_dir: Path,
    listen: tuple[str, int],
    data_dir: Path | None,
    ffmpeg: str | None,
    heartbeat: float,
    peers: Path | None,
    segment_seconds: float,
    vcodec: str,
    scale: str | None,
    acodec: str,
    extra_args: str,
    lease_timeout: float,
    worker_timeout: float,
    max_failures: int,
    decode_check: bool,
    progress: bool | None,
    log_level: str,
) -> None:
    """Transcode INPUT into OUTPUT on the workers that ask this node for tasks.

    Exits 0 once OUTPUT is complete and checked (duration, frames, a clean decode);
    on any failure it exits 1 with the reason and leaves no OUTPUT behind.
    """
    from smartget.transcode.ffmpeg import JobParams
    from smartget.transcode.runner import default_ffmpeg
    from smartget.transcode.server import JobSettings, ServerApp

    setup_logging(log_level)
    try:
        params = JobParams(vcodec, acodec, scale, tuple(shlex.split(extra_args)))
    except (SmartGetError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    show = sys.stderr.isatty() if progress is None else progress

    async def main(directory: Path) -> int:
        job = JobSettings(
            input=input_path,
            output=output,
            work_dir=directory / "job",
            params=params,
            ffmpeg=ffmpeg or default_ffmpeg(),
            segment_seconds=segment_seconds,
            lease_timeout=lease_timeout,
            worker_timeout=worker_timeout,
            max_failures=max_failures,
            decode_check=decode_check,
        )
        server = ServerApp(job)
        settings = _mesh_settings(tls_dir, directory, listen, peers, heartbeat, server)
        from smartget.mesh.service import running

        async with running(settings) as node:
            waiter = asyncio.ensure_future(server.wait())

            got: list[int] = []

            def stop(sig: int) -> None:
                got.append(sig)
                waiter.cancel()

            on_stop_signals(stop)
            try:
                await _show_progress(server, node, waiter, show)
                done = await waiter
            except asyncio.CancelledError:
                log.warning("interrupted; no OUTPUT written")
                return 128 + (got[0] if got else signal.SIGINT)
        click.echo(str(done))
        return 0

    sys.exit(_run(main, data_dir))


async def _show_progress(server: Any, node: Any, waiter: asyncio.Future[Any], show: bool) -> None:
    """A rich progress bar (segments done, workers active) until the job ends."""
    if not show:
        await asyncio.wait([waiter])
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        row = bar.add_task("starting", total=None)
        while True:
            done, total, workers = server.progress(node.now())
            bar.update(row, completed=done, total=total or None,
                       description=f"{server.phase}, workers active: {workers}")  # fmt: skip
            if waiter.done():
                break
            await asyncio.wait([waiter], timeout=0.5)


@transcode.command()
@click.option("--server", required=True, help="The node id of the server (its certificate's).")
@_mesh_options("0.0.0.0:20131")
@click.option(
    "--peers",
    type=FILE,
    required=True,
    help="address.txt: the server's (or a proxy's) host:port, one a line.",
)
@click.option("--concurrency", type=click.IntRange(min=1, max=64), default=2, show_default=True,
              help="Tasks transcoded at once.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="ffmpeg -threads per task (0: ffmpeg decides).")  # fmt: skip
@click.option("--once", is_flag=True, help="Exit 0 when the server says its job is done.")
@common_options
def work(
    server: str,
    tls_dir: Path,
    listen: tuple[str, int],
    data_dir: Path | None,
    ffmpeg: str | None,
    heartbeat: float,
    peers: Path,
    concurrency: int,
    threads: int,
    once: bool,
    log_level: str,
) -> None:
    """Transcode tasks for the server: ask, transcode, send back, ask again.

    Runs until SIGINT/SIGTERM (exit 130/143), or with --once until the job is done.
    """
    from smartget.transcode.worker import WorkerApp

    setup_logging(log_level)

    async def main(directory: Path) -> int:
        from smartget.mesh.service import running

        app = WorkerApp(server, ffmpeg=ffmpeg, concurrency=concurrency, heartbeat=heartbeat,
                        threads=threads, once=once)  # fmt: skip
        settings = _mesh_settings(tls_dir, directory, listen, peers, heartbeat, app)
        got: list[int] = []
        async with running(settings) as node:

            def stop(sig: int) -> None:
                got.append(sig)
                app.finished.set()

            on_stop_signals(stop)
            await app.finished.wait()
            log.info("worker done: %s", app.statistics() | {"mesh": node.stats})
        return 128 + got[0] if got else 0

    sys.exit(_run(main, data_dir))
