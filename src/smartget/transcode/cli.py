"""``smartget transcode serve|work``: a transcoding farm on mesh nodes (issue 8)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from smartget.config import (
    DIR,
    FILE,
    HOSTPORT,
    REQUIRED,
    common_options,
    config_from,
    options_from,
    setting,
    setup_logging,
)
from smartget.errors import SmartGetError
from smartget.lifecycle import on_stop_signals
from smartget.transcode.ffmpeg import JobParams
from smartget.transcode.server import JobSettings
from smartget.transcode.worker import WorkerSettings

log = logging.getLogger("smartget.transcode")


@click.group()
def transcode() -> None:
    """Distributed ffmpeg over the mesh (MSW's ffmpeg plugin).

    One node serves a job: `smartget transcode serve INPUT OUTPUT --tls-dir NODE_DIR
    --listen HOST:PORT` cuts INPUT into segments on keyframes, hands them to workers,
    checks and joins what comes back. Worker nodes run `smartget transcode work --server
    ID --tls-dir NODE_DIR --peers FILE`. Certificates come from `smartget mesh ca`.
    """


_LISTEN = "Address this mesh node accepts links on."


@dataclass(frozen=True, kw_only=True)
class ServeNode:
    """The mesh node of ``transcode serve`` (``work``'s is :class:`WorkNode`)."""

    tls_dir: Path = setting(REQUIRED, "NODE_DIR from `mesh ca issue`.", click_type=DIR)
    listen: tuple[str, int] = setting(("0.0.0.0", 20130), _LISTEN, click_type=HOSTPORT)
    data_dir: Path | None = setting(
        None,
        "Received files and work files [default: a temporary directory, removed at exit].",
        click_type=DIR,
    )
    ffmpeg: str | None = setting(
        None, "ffmpeg binary [default: the one in the imageio-ffmpeg wheel]."
    )
    heartbeat: float = setting(
        2.0, "Seconds between mesh heartbeats and redials (and worker 'alive').", min=0.05
    )
    peers: Path | None = setting(None, "address.txt: workers to dial (optional).", click_type=FILE)


@dataclass(frozen=True, kw_only=True)
class WorkNode(ServeNode):
    """The mesh node of ``transcode work``: it must know where the server is."""

    listen: tuple[str, int] = setting(("0.0.0.0", 20131), _LISTEN, click_type=HOSTPORT)
    peers: Path = setting(
        REQUIRED, "address.txt: the server's (or a proxy's) host:port, one a line.", click_type=FILE
    )


def _mesh_settings(node: ServeNode, data_dir: Path, app: Any) -> Any:
    from smartget.mesh.settings import MeshSettings, read_peers_file

    return MeshSettings(
        tls_dir=node.tls_dir,
        data_dir=data_dir,
        listen=node.listen,
        peers=read_peers_file(node.peers) if node.peers else [],
        apps=[],
        extra_apps={"transcode": app},
        heartbeat=node.heartbeat,
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
@options_from(ServeNode)
@options_from(JobParams)  # --vcodec, --acodec, --scale
@click.option(
    "--extra-args",
    default="",
    metavar="'ARGS'",
    help="More encoder options as one quoted string, e.g. '-preset fast -crf 23' "
    "(no paths, URLs or file options: workers refuse them).",
)
@options_from(JobSettings)  # --segment-seconds, --lease-timeout, ..., --decode-check
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a TTY].")
@common_options
def serve(
    input_path: Path,
    output: Path,
    extra_args: str,
    progress: bool | None,
    log_level: str,
    **options: Any,
) -> None:
    """Transcode INPUT into OUTPUT on the workers that ask this node for tasks.

    Exits 0 once OUTPUT is complete and checked (duration, frames, a clean decode);
    on any failure it exits 1 with the reason and leaves no OUTPUT behind.
    """
    from smartget.transcode.runner import default_ffmpeg
    from smartget.transcode.server import ServerApp

    setup_logging(log_level)
    node_options = config_from(ServeNode, options)
    try:
        params = config_from(JobParams, options, extra=tuple(shlex.split(extra_args)))
    except (SmartGetError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    show = sys.stderr.isatty() if progress is None else progress

    async def main(directory: Path) -> int:
        job = config_from(
            JobSettings,
            options,
            input=input_path,
            output=output,
            work_dir=directory / "job",
            params=params,
            ffmpeg=node_options.ffmpeg or default_ffmpeg(),
        )
        server = ServerApp(job)
        settings = _mesh_settings(node_options, directory, server)
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

    sys.exit(_run(main, node_options.data_dir))


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
@options_from(WorkerSettings)  # --server, --concurrency, --threads, --once
@options_from(WorkNode)
@common_options
def work(log_level: str, **options: Any) -> None:
    """Transcode tasks for the server: ask, transcode, send back, ask again.

    Runs until SIGINT/SIGTERM (exit 130/143), or with --once until the job is done.
    """
    from smartget.transcode.worker import WorkerApp

    setup_logging(log_level)
    node_options = config_from(WorkNode, options)
    worker = config_from(WorkerSettings, options)

    async def main(directory: Path) -> int:
        from smartget.mesh.service import running

        app = WorkerApp(
            **dataclasses.asdict(worker),
            ffmpeg=node_options.ffmpeg,
            heartbeat=node_options.heartbeat,
        )
        settings = _mesh_settings(node_options, directory, app)
        got: list[int] = []
        async with running(settings) as node:

            def stop(sig: int) -> None:
                got.append(sig)
                app.finished.set()

            on_stop_signals(stop)
            await app.finished.wait()
            log.info("worker done: %s", app.statistics() | {"mesh": node.stats})
        return 128 + got[0] if got else 0

    sys.exit(_run(main, node_options.data_dir))
