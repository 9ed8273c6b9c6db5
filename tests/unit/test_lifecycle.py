"""The supervision policy: essential crashes stop the service, auxiliary ones restart."""

from __future__ import annotations

import asyncio

import pytest

from smartget import lifecycle
from smartget.lifecycle import Supervisor

pytestmark = pytest.mark.asyncio


async def test_an_essential_crash_stops_the_service_with_its_own_error() -> None:
    stopped = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def crash() -> None:
        raise RuntimeError("disk gone")

    async def service() -> None:
        async with asyncio.timeout(5), Supervisor("svc") as sup:
            sup.start(forever, name="forever", essential=True)
            sup.start(crash, name="crash", essential=True)
            await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="disk gone"):
        await service()
    assert stopped.is_set()


async def test_an_auxiliary_crash_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"crash {runs}")
        third.set()

    async with asyncio.timeout(5), Supervisor("svc", restart_after=0.01) as sup:
        sup.start(flaky, name="flaky", essential=False)
        await third.wait()
    assert runs == 3
    assert sup.restarts == 2
    assert "svc: task flaky crashed" in caplog.text


async def test_leaving_the_block_cancels_what_still_runs() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with asyncio.timeout(5), Supervisor("svc") as sup:
        sup.start(forever, name="forever", essential=False)
        await asyncio.sleep(0)
    assert cancelled.is_set()


async def test_start_outside_the_block_is_refused() -> None:
    async def nothing() -> None:
        return None

    sup = Supervisor("svc")
    coro = nothing()
    with pytest.raises(RuntimeError, match="inside"):
        sup.start(coro, name="x", essential=True)
    coro.close()


async def test_the_bodys_own_exception_comes_out_as_itself() -> None:
    async def service() -> None:
        async with asyncio.timeout(5), Supervisor("svc") as sup:
            sup.start(asyncio.Event().wait, name="forever", essential=False)
            raise KeyError("the caller's own")

    with pytest.raises(KeyError, match="the caller's own"):
        await service()


async def test_a_task_stuck_on_its_way_out_is_named_and_cancelled_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "STOP_WITHIN", 0.2)
    stuck_once = asyncio.Event()

    async def closes_slowly() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stuck_once.set()
            await asyncio.Event().wait()  # an unbounded await while stopping

    async with asyncio.timeout(5):  # before: this never finished
        async with Supervisor("svc") as tasks:
            tasks.start(closes_slowly, name="reader", essential=False)
            await asyncio.sleep(0)
    assert stuck_once.is_set()
    assert "task svc:reader still running 0.2 s after it was told to stop" in caplog.text
    assert "closes_slowly" in caplog.text
