"""The task handlers of seed 003: maketorrent, download, shutdown, shutdownall, delete.

:class:`Agent` ties the parts together: paths are confined by :class:`Roots`, files
fetched by :class:`Fetcher`, torrents run by :class:`Engine`, rows kept in
:class:`NodeState`, progress reported by an optional :class:`Reporter`. :meth:`handle`
never raises: every failure becomes seed 003's response with ``result`` ``failed`` and
the reason in ``traceback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from smartget.errors import NodeAgentError, SmartGetError, TorrentError
from smartget.node.engine import INITIAL, Engine, info_hash_of, load_torrent
from smartget.node.fetcher import Fetcher
from smartget.node.maker import make_torrent, write_atomic
from smartget.node.paths import Roots, prune_empty_dirs, remove_file, url_relpath
from smartget.node.reporter import Reporter
from smartget.node.state import NodeState, TorrentRecord
from smartget.node.tasks import NodeIdentity, Task, TaskError, response

__all__ = ["Agent", "TaskResult"]

log = logging.getLogger(__name__)

TORRENT_SUFFIX = ".torrent"


class TaskResult:
    """What a handler found: status, args and the retries used."""

    def __init__(self, args: dict[str, Any], *, status: str = "", retries: int = 0) -> None:
        self.args = args
        self.status = status
        self.retries = retries


class Agent:
    def __init__(
        self,
        identity: NodeIdentity,
        roots: Roots,
        engine: Engine,
        fetcher: Fetcher,
        state: NodeState,
        *,
        files_url: str,
        trackers: tuple[str, ...] = (),
        reporter: Reporter | None = None,
    ) -> None:
        self.identity = identity
        self.roots = roots
        self.engine = engine
        self.fetcher = fetcher
        self.state = state
        self.files_url = files_url.rstrip("/")
        self.trackers = trackers
        self.reporter = reporter
        self._lock = asyncio.Lock()
        self.handled: dict[str, int] = {}
        self.failed = 0
        self._handlers: dict[str, Callable[[Task], Awaitable[TaskResult]]] = {
            "maketorrent": self.maketorrent,
            "download": self.download,
            "shutdown": self.shutdown,
            "shutdownall": self.shutdownall,
            "delete": self.delete,
        }

    def statistics(self) -> dict[str, int]:
        return {"failed": self.failed, **{f"handled_{k}": v for k, v in self.handled.items()}}

    # ---- entry point -----------------------------------------------------------------

    async def handle(self, task: Task) -> dict[str, Any]:
        """Run a task and answer with seed 003's response_msg; never raises."""
        self.handled[task.event] = self.handled.get(task.event, 0) + 1
        try:
            if task.expire_at is not None:
                left = task.expire_at - time.time()
                if left <= 0:
                    raise TaskError(f"task expired {-left:.0f} s before it arrived")
                try:
                    async with asyncio.timeout(left):
                        result = await self._handlers[task.event](task)
                except TimeoutError:
                    raise TaskError("task expired before it could finish") from None
            else:
                result = await self._handlers[task.event](task)
        except (SmartGetError, OSError) as exc:
            return self.failure(task.event, task.taskid, _reason(exc))
        except Exception as exc:
            log.exception("task %s (%s) failed unexpectedly", task.taskid, task.event)
            return self.failure(task.event, task.taskid, f"internal error: {exc!r}")
        return response(
            self.identity,
            task.event,
            taskid=task.taskid,
            status=result.status,
            retries=result.retries,
            args=result.args,
        )

    def failure(self, event: str, taskid: str, reason: str) -> dict[str, Any]:
        self.failed += 1
        log.info("task %s (%s) failed: %s", taskid, event, reason)
        return response(self.identity, event, taskid=taskid, result="failed", traceback=reason)

    # ---- maketorrent (synchronous) ---------------------------------------------------

    async def maketorrent(self, task: Task) -> TaskResult:
        """Seed 003: fetch fileurl unless the file is here, make a v1 torrent, seed it."""
        root = self.roots.root_for(task.arg("wwwroot"))
        fileurl, filename = task.arg("fileurl"), task.arg("filename")
        if not fileurl and not filename:
            raise TaskError("args.fileurl is required (or args.filename of a file already here)")
        path = (
            self.roots.filename(root, filename)
            if filename
            else self.roots.under(root, url_relpath(fileurl))
        )
        retries = 0
        if not path.is_file():
            if path.exists():
                raise TaskError(f"{path} exists and is not a regular file")
            if not fileurl:
                raise TaskError(f"{path} is not here and no args.fileurl says where to fetch it")
            fetched = await self.fetcher.fetch_file(fileurl, path, max_retries=task.max_retries)
            retries = fetched.retries
        trackers = list(task.args.get("trackers") or self.trackers)
        web_seeds = [fileurl] if fileurl else []
        made = await asyncio.to_thread(make_torrent, path, trackers=trackers, web_seeds=web_seeds)
        torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        async with self._lock:
            await asyncio.to_thread(write_atomic, torrent_path, made.data)
            old = self.state.find(data_path=str(path))
            if old is not None and old.sha1 != made.sha1:
                await self._stop(old.sha1)
            self.state.put(
                TorrentRecord(
                    sha1=made.sha1,
                    torrentfile=str(torrent_path),
                    save_path=str(path.parent),
                    data_path=str(path),
                    torrentfileurl=self.url_of(torrent_path),
                    fileurl=fileurl,
                    taskid=task.taskid,
                    seed_mode=True,
                )
            )
            self.engine.add(load_torrent(made.data), path.parent, seed_mode=True)
            self._track(made.sha1)
        return TaskResult(
            {
                "filename": str(path),
                "filesize": made.size,
                "sha1": made.sha1,
                "torrentfile": str(torrent_path),
                "torrentfileurl": self.url_of(torrent_path),
                "trackers": trackers,
            },
            retries=retries,
        )

    # ---- download (asynchronous) -----------------------------------------------------

    async def download(self, task: Task) -> TaskResult:
        """Seed 003: fetch the .torrent, store it at the URL's path, start; answer at once."""
        url = task.arg("torrentfileurl")
        if not url:
            raise TaskError("args.torrentfileurl is required")
        root = self.roots.root_for(task.arg("wwwroot"))
        rel = url_relpath(url)
        torrent_path = self.roots.under(root, rel)
        fetched = await self.fetcher.fetch_small(url, max_retries=task.max_retries)
        ti = load_torrent(fetched.body)
        sha1 = info_hash_of(ti)
        wanted = task.arg("sha1").strip().lower()
        if wanted and wanted != sha1:
            raise TorrentError(f"the torrent's sha1 is {sha1}, the task asked for {wanted}")
        data_rel = _data_relpath(rel, ti.name())
        data_path = self.roots.under(root, data_rel)
        args: dict[str, Any] = {
            "filename": str(data_path),
            "fileurl": url.removesuffix(TORRENT_SUFFIX) if url.endswith(TORRENT_SUFFIX) else "",
            "sha1": sha1,
            "torrentfile": str(torrent_path),
            "torrentfileurl": url,
        }
        async with self._lock:
            if sha1 in self.engine.handles:
                args["already"] = True
                return TaskResult(
                    args, status=self.engine.status(sha1).status, retries=fetched.retries
                )
            other = self.state.find(data_path=str(data_path))
            if other is not None:
                raise TorrentError(f"{data_path} already belongs to torrent {other.sha1}")
            torrent_path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, torrent_path, fetched.body)
            self.state.put(
                TorrentRecord(
                    sha1=sha1,
                    torrentfile=str(torrent_path),
                    save_path=str(data_path.parent),
                    data_path=str(data_path),
                    rename_to=data_path.name,
                    torrentfileurl=url,
                    fileurl=args["fileurl"],
                    taskid=task.taskid,
                )
            )
            self.engine.add(ti, data_path.parent, rename_to=data_path.name)
            self._track(sha1)
        return TaskResult(args, status=INITIAL, retries=fetched.retries)

    # ---- shutdown, shutdownall, delete (synchronous) ---------------------------------

    async def shutdown(self, task: Task) -> TaskResult:
        """Seed 003: stop by sha1 or torrentfileurl (sha1 wins when both are given)."""
        sha1 = task.arg("sha1").strip().lower()
        url = task.arg("torrentfileurl")
        if not sha1 and not url:
            raise TaskError("args.sha1 or args.torrentfileurl is required")
        async with self._lock:
            if not sha1:
                sha1 = self._sha1_of_url(url, task.arg("wwwroot"))
            if self.state.get(sha1) is None and sha1 not in self.engine.handles:
                raise TorrentError(f"no torrent with sha1 {sha1} runs on this node")
            await self._stop(sha1)
        return TaskResult({})

    async def shutdownall(self, task: Task) -> TaskResult:
        async with self._lock:
            for record in self.state.torrents():
                await self._stop(record.sha1)
            for sha1 in list(self.engine.handles):
                await self._stop(sha1)
        return TaskResult({})

    async def delete(self, task: Task) -> TaskResult:
        """Seed 003: stop, remove data and .torrent, prune empty dirs; gone already is fine."""
        root = self.roots.root_for(task.arg("wwwroot"))
        filename, url = task.arg("filename"), task.arg("torrentfileurl")
        torrent_path: Path | None = None
        if filename:
            path = self.roots.filename(root, filename)
        elif url:
            rel = url_relpath(url)
            torrent_path = self.roots.under(root, rel)
            path = self.roots.under(root, _data_relpath(rel, rel.name))
        else:
            raise TaskError("args.filename or args.torrentfileurl is required")
        if torrent_path is None:
            torrent_path = path.with_name(path.name + TORRENT_SUFFIX)
        async with self._lock:
            found = self.state.find(data_path=str(path)) or self.state.find(
                torrentfile=str(torrent_path)
            )
            if found is not None:
                await self._stop(found.sha1)
            if path.is_dir() and not path.is_symlink():
                await asyncio.to_thread(shutil.rmtree, path)
            else:
                remove_file(path)
            remove_file(torrent_path)
            if found is not None and found.torrentfile != str(torrent_path):
                remove_file(Path(found.torrentfile))
            home = self.roots.containing(path) or root
            prune_empty_dirs(path.parent, home)
        return TaskResult({})

    # ---- helpers ---------------------------------------------------------------------

    async def _stop(self, sha1: str) -> None:
        await self.engine.remove(sha1)
        self.state.delete(sha1)
        if self.reporter is not None:
            self.reporter.untrack(sha1)

    def _track(self, sha1: str) -> None:
        if self.reporter is not None:
            self.reporter.track(sha1)

    def _sha1_of_url(self, url: str, wwwroot: str) -> str:
        for record in self.state.torrents():
            if record.torrentfileurl == url:
                return record.sha1
        path = self.roots.under(self.roots.root_for(wwwroot), url_relpath(url))
        found = self.state.find(torrentfile=str(path))
        if found is None:
            raise TorrentError(f"no torrent from {url[:200]} runs on this node")
        return found.sha1

    def url_of(self, path: Path) -> str:
        """The file server's URL of ``path``, or '' if it is outside wwwroot."""
        try:
            rel = path.relative_to(self.roots.wwwroot)
        except ValueError:
            return ""
        return f"{self.files_url}/{quote(rel.as_posix())}"

    async def restore(self) -> int:
        """Add back every torrent of the state (after a restart); returns how many."""
        count = 0
        for record in self.state.torrents():
            resume_path = self.engine.resume_path(record.sha1)
            resume = None
            with contextlib.suppress(FileNotFoundError):
                resume = resume_path.read_bytes()
            try:
                ti = load_torrent(await asyncio.to_thread(Path(record.torrentfile).read_bytes))
                self.engine.add(
                    ti,
                    Path(record.save_path),
                    rename_to=record.rename_to or None,
                    seed_mode=record.seed_mode and resume is None,
                    resume=resume,
                )
            except (OSError, NodeAgentError) as exc:
                log.error("cannot restore torrent %s: %s", record.sha1, _reason(exc))
                continue
            count += 1
            if self.reporter is not None:
                self.reporter.schedule.track(
                    record.sha1,
                    self.reporter.clock(),
                    done=record.report_done,
                    retries=record.report_retries,
                )
        return count


def _data_relpath(rel: PurePosixPath, fallback: str) -> PurePosixPath:
    """Where a torrent's data goes: the URL's path without ``.torrent`` (seed 003)."""
    name = rel.name
    if name.endswith(TORRENT_SUFFIX) and len(name) > len(TORRENT_SUFFIX):
        return rel.with_name(name[: -len(TORRENT_SUFFIX)])
    return rel.with_name(fallback or f"{name}.data")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
