"""Process lifecycle shared by every service: stop signals and task supervision.

Supervision policy, the same in every service (:class:`Supervisor`):

* An **essential** task is part of what the service *is* (the hub's store writer, the
  DHT's socket loop): if it crashes, the service cannot keep its promises, so the crash
  cancels every other task and propagates out of ``async with Supervisor(...)``, and
  the process exits with the error.
* An **auxiliary** task is a helper the service can live without for a while (a
  reporter, a heartbeat, a deadline timer): a crash is logged with its traceback and
  the task is started again after a backoff that doubles from ``restart_after`` up to
  ``max_backoff``. A task that returns normally is done and is not restarted.

Leaving the ``async with`` normally cancels what is still running and waits for it; a
task still running ``STOP_WITHIN`` s later is logged (with where it waits) and cancelled
again.

:func:`run_service` runs a service's main coroutine on uvloop (libuv's event loop):
the hub answers many small requests (announces, heartbeats), and on this loop its HTTP
announces/s rose by a fifth (benchmarks/tracker.py). ``SMARTGET_EVENT_LOOP=asyncio``
runs it on Python's own loop instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from smartget.errors import ConfigError

__all__ = ["EVENT_LOOP_ENV", "STOP_SIGNALS", "Supervisor", "on_stop_signals", "run_service"]

T = TypeVar("T")

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_WITHIN = 10.0  # seconds a cancelled task may take to finish before it is named


EVENT_LOOP_ENV = "SMARTGET_EVENT_LOOP"
EVENT_LOOPS = ("uvloop", "asyncio")


def run_service(main: Coroutine[Any, Any, T], environ: dict[str, str] | None = None) -> T:
    """Run ``main`` to its end in a new event loop: uvloop unless ``SMARTGET_EVENT_LOOP``
    says ``asyncio``."""
    choice = (os.environ if environ is None else environ).get(EVENT_LOOP_ENV, "uvloop")
    if choice not in EVENT_LOOPS:
        main.close()
        raise ConfigError(f"{EVENT_LOOP_ENV}={choice!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return asyncio.run(main)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def on_stop_signals(callback: Callable[[int], None]) -> None:
    """Call ``callback(signum)`` in the running loop on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback, sig)


class Supervisor:
    """Runs a service's background tasks under the policy in this module's docstring."""

    def __init__(
        self, service: str, *, restart_after: float = 1.0, max_backoff: float = 60.0
    ) -> None:
        self.service = service
        self.restart_after = restart_after
        self.max_backoff = max_backoff
        self._group = asyncio.TaskGroup()
        self._tasks: list[asyncio.Task[Any]] = []
        self._entered = False
        self.restarts = 0

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stragglers()
        try:
            await self._group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # One error is the common case (an essential task's crash, or the body's own
            # exception, which TaskGroup also wraps): raise it as itself, so callers see
            # the error rather than a group of one.
            crashes = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            if len(crashes) == 1:
                raise crashes[0] from None
            raise

    async def _stragglers(self) -> None:
        """Tasks still running ``STOP_WITHIN`` s after their cancellation (stuck in an
        unbounded await on their way out) are named, with where they wait, and
        cancelled again: a service asked to stop stops."""
        running = [t for t in self._tasks if not t.done()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=STOP_WITHIN)
        for task in pending:
            where = _awaiting(task)
            log.error(
                "%s: task %s still running %g s after it was told to stop (at %s); "
                "cancelling it again",
                self.service,
                task.get_name(),
                STOP_WITHIN,
                where or "?",
            )
            task.cancel()

    def start(
        self,
        make: Callable[[], Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any],
        *,
        name: str,
        essential: bool,
    ) -> asyncio.Task[Any]:
        """Run a task. An auxiliary task that may restart needs a factory (``make``)."""
        if not self._entered:
            raise RuntimeError("start tasks inside 'async with Supervisor(...)'")
        if essential:
            coro = make() if callable(make) else make
            task = self._group.create_task(coro, name=f"{self.service}:{name}")
        else:
            task = self._group.create_task(
                self._keep_running(make, name), name=f"{self.service}:{name}"
            )
        self._tasks.append(task)
        return task

    async def _keep_running(
        self, make: Callable[[], Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any], name: str
    ) -> None:
        backoff = self.restart_after
        first = True
        while True:
            if callable(make):
                coro = make()
            elif first:
                coro = make
            else:  # a bare coroutine cannot run twice
                log.error("%s: task %s crashed and cannot be restarted", self.service, name)
                return
            first = False
            try:
                await coro
                return
            except Exception:
                log.exception(
                    "%s: task %s crashed; restarting in %.1f s", self.service, name, backoff
                )
            self.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: its chain of awaited coroutines, innermost last
    (``Task.get_stack`` gives only the outermost frame of a suspended coroutine)."""
    frames: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            frames.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-4:])
