"""The console's hubs panel (issue 13): the view of the fleet state's hubs, and the
bounded refresh that feeds the synchronous snapshot."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from smartget.hub.console import service
from smartget.hub.console.service import Console
from smartget.hub.console.views import hubs_view
from smartget.hub.state.api import StateUnavailable

THIS = {
    "id": "a",
    "state": "redis",
    "text": "127.0.0.1:7000",
    "http": "http://127.0.0.1:8000",
    "started": 100.0,
    "version": "1.2",
}


def beat(hub_id: str, started: float, seen: float, http: str = "") -> dict[str, Any]:
    return {
        "id": hub_id,
        "state": "redis",
        "text": f"10.0.0.{len(hub_id)}:7000",
        "http": http,
        "started": started,
        "seen": seen,
        "version": "1.1",
    }


def test_this_hub_first_then_the_others_by_start() -> None:
    listed = [beat("c", 300.0, 999.0), beat("a", 100.0, 999.5), beat("b", 200.0, 998.0, "http://b")]
    shown = hubs_view(THIS, listed, current=True, wall=1000.0)
    assert [h["id"] for h in shown] == ["a", "b", "c"]
    this, b, c = shown
    assert this["this"]
    assert this["up"] is True
    assert this["seen"] is None
    assert this["url"] == "http://127.0.0.1:8000"
    assert this["version"] == "1.2"
    assert b == {
        "id": "b",
        "url": "http://b",
        "http": "http://b",
        "text": "10.0.0.1:7000",
        "state": "redis",
        "version": "1.1",
        "started": 200.0,
        "seen": 2.0,
        "up": True,
        "this": False,
    }
    assert c["url"] == "10.0.0.1:7000"  # no HTTP port: its text address


def test_before_any_answer_only_this_hub_and_a_stale_list_is_not_known() -> None:
    assert [h["id"] for h in hubs_view(THIS, None, current=False, wall=1.0)] == ["a"]
    stale = hubs_view(THIS, [beat("b", 1.0, 0.0)], current=False, wall=10.0)
    assert [h["up"] for h in stale] == [True, None]


def fake_console(answer: Any) -> Any:
    async def fleet_hubs() -> list[dict[str, Any]]:
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.sleep(60)
        return list(answer)

    return types.SimpleNamespace(
        fleet_hubs=fleet_hubs,
        clock=lambda: 50.0,
        _hubs=[beat("old", 1.0, 1.0)],
        _hubs_at=10.0,
        _hubs_failing=False,
    )


@pytest.mark.asyncio
async def test_refresh_keeps_the_answer_and_its_time() -> None:
    console = fake_console([beat("b", 1.0, 1.0)])
    await Console.refresh_hubs(console)
    assert [h["id"] for h in console._hubs] == ["b"]
    assert console._hubs_at == 50.0


@pytest.mark.asyncio
@pytest.mark.parametrize("answer", [StateUnavailable("down"), OSError("reset"), "hang"])
async def test_refresh_is_bounded_and_a_failure_keeps_the_last_list(
    answer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "HUBS_TIMEOUT", 0.05)
    console = fake_console(answer)
    async with asyncio.timeout(5):
        await Console.refresh_hubs(console)
    assert [h["id"] for h in console._hubs] == ["old"]
    assert console._hubs_at == 10.0  # not current any more once HUBS_CURRENT has passed
    assert console._hubs_failing
