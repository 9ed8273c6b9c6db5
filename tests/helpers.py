"""Helpers shared by the tests: waiting on state with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float, what: str = "state"
) -> None:
    """Poll ``predicate`` (state owned by a timer or another process) for ``within`` s at most.

    The predicate may be async (an HTTP poll): it is awaited, and a poll that hangs
    counts against ``within`` too.
    """
    deadline = time.monotonic() + within

    async def check() -> bool:
        result = predicate()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    while True:
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0.001)):
                if await check():
                    return
        except TimeoutError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.02)


def wait_until_sync(predicate: Callable[[], bool], within: float, what: str = "state") -> None:
    """The same, for tests that are not async."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        time.sleep(0.02)


async def stop_process(proc: asyncio.subprocess.Process, within: float = 10.0) -> None:
    """SIGTERM a child that is still running; SIGKILL it if it is not gone within ``within`` s."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], within: float = 10.0) -> None:
    """SIGTERM every child still running, then wait for each; SIGKILL one not gone in time."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
