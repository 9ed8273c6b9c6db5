"""Drains on Redis, the pure parts: the libraries' composition, the console's copy of the
fleet's drained set (read when its version changes, bounded, kept when Redis fails).
The steps themselves run on a real Redis: tests/integration/hub/test_drains_redis.py."""

from __future__ import annotations

import asyncio
import re
import types
from typing import Any

import pytest

from smartget.errors import RegistryError
from smartget.hub.console import drain as console_drain
from smartget.hub.console import service
from smartget.hub.console.drain import DrainList
from smartget.hub.console.service import Console
from smartget.hub.registry import Node
from smartget.hub.state import functions
from smartget.hub.state.api import StateUnavailable
from smartget.hub.state.functions import (
    DRAINS_LIBRARY,
    DRAINS_LIBRARY_NAME,
    LIBRARY,
    LIBRARY_NAME,
    REPORTS_LIBRARY,
)

# What smartget1 registered before drains: an older hub loads it with REPLACE.
SMARTGET1 = {
    "sg_register", "sg_deregister", "sg_setstatus", "sg_setstatus_many", "sg_requestnodes",
    "sg_update", "sg_sweep", "sg_lease", "sg_release", "sg_hub_beat", "sg_hubs",
}  # fmt: skip


def registered(library: str) -> set[str]:
    plain = re.findall(r"redis\.register_function\('([a-z0-9_]+)'", library)
    flagged = re.findall(r"function_name = '([a-z0-9_]+)'", library)
    return set(plain) | set(flagged)


def test_smartget1_keeps_its_functions_and_drains_have_names_of_their_own() -> None:
    assert LIBRARY.startswith(f"#!lua name={LIBRARY_NAME}\n")
    assert DRAINS_LIBRARY.startswith(f"#!lua name={DRAINS_LIBRARY_NAME}\n")
    assert registered(LIBRARY) == SMARTGET1
    drains = registered(DRAINS_LIBRARY)
    assert drains == {
        "sg_deregister2", "sg_setstatus2", "sg_setstatus_many2", "sg_sweep2",
        "sg_drain", "sg_undrain", "sg_drained",
    }  # fmt: skip
    # A name lives in one library only: no load (of any version) collides with another.
    assert not drains & SMARTGET1
    assert not drains & registered(REPORTS_LIBRARY)


def test_templates_are_filled_and_the_drain_steps_use_the_drain_helpers() -> None:
    for library in (LIBRARY, DRAINS_LIBRARY):
        assert "$" not in library.replace(":(%d+)$'", "")  # a Lua pattern's anchor only
    assert "forget(P, id)" in DRAINS_LIBRARY
    assert "forget(P, id)" not in LIBRARY
    assert "held(P, args[i]" in DRAINS_LIBRARY
    assert "held(" not in LIBRARY
    # Every key is the prefix's (one hash tag, one slot on a cluster).
    for suffix in ("drained", "drainv"):
        assert f"P .. '{suffix}'" in DRAINS_LIBRARY or f"args[1] .. '{suffix}'" in DRAINS_LIBRARY


def test_one_bound_for_both_engines() -> None:
    assert functions.MAX_DRAINED == console_drain.MAX_DRAINED == 100_000


def test_a_drain_list_takes_a_copy_of_the_fleets_set_within_its_bound() -> None:
    drains = DrainList(max_drained=2)
    drains.add(7, 3)
    drains.replace({1: 0, 2: 0})
    assert drains.ids() == [1, 2]
    assert 7 not in drains
    with pytest.raises(RegistryError, match="more than 2"):
        drains.replace({1: 0, 2: 0, 3: 0})
    assert drains.ids() == [1, 2]


class FakeFleet:
    """The shared state's drains: a set with a version, or an answer that fails."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.version = 0
        self.reads: list[str] = []
        self.fail: BaseException | str | None = None

    async def drained(self, seen: str = "") -> tuple[str, list[int] | None]:
        self.reads.append(seen)
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail == "hang":
            await asyncio.sleep(60)
        version = str(self.version)
        return version, None if version == seen else sorted(self.ids)

    async def drain(self, node_id: int) -> Node:
        self.ids.add(node_id)
        self.version += 1
        return Node(node_id, "10.0.0.1", 1, "", 0, "", 0, "", "")

    async def undrain(self, node_id: int) -> Node:
        self.ids.discard(node_id)
        self.version += 1
        return Node(node_id, "10.0.0.1", 1, "", 5, "", 0, "", "")

    async def deregister(self, caller: Any, node_id: int) -> Node:
        self.ids.discard(node_id)
        self.version += 1
        return Node(node_id, "10.0.0.1", 1, "", -1, "", 0, "", "")


def shared_console(fleet: FakeFleet) -> Any:
    console = types.SimpleNamespace(_drains_failing=False)
    Console.share_drains(console, fleet)  # type: ignore[arg-type]
    return console


@pytest.mark.asyncio
async def test_the_copy_is_read_when_its_version_changes() -> None:
    fleet = FakeFleet()
    fleet.ids, fleet.version = {3, 1}, 4
    console = shared_console(fleet)
    await Console.refresh_drains(console)
    assert (console.drains.ids(), console._drains_seen) == ([1, 3], "4")
    await Console.refresh_drains(console)  # unchanged: nothing sent back
    assert fleet.reads == ["", "4"]
    assert console.drains.ids() == [1, 3]
    fleet.ids, fleet.version = {1}, 5  # another hub brought 3 back
    await Console.refresh_drains(console)
    assert console.drains.ids() == [1]


@pytest.mark.asyncio
async def test_this_hubs_actions_change_the_copy_at_once() -> None:
    fleet = FakeFleet()
    console = shared_console(fleet)
    await Console.drain(console, 9)
    assert 9 in console.drains
    assert fleet.ids == {9}
    assert (await Console.undrain(console, 9)).status == 5
    assert 9 not in console.drains
    assert not fleet.ids
    await Console.drain(console, 4)
    await Console.deregister(console, 4)
    assert 4 not in console.drains
    assert not fleet.ids


@pytest.mark.asyncio
@pytest.mark.parametrize("failure", [StateUnavailable("down"), OSError("reset"), "hang"])
async def test_a_failed_read_is_bounded_and_keeps_the_copy(
    failure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "HUBS_TIMEOUT", 0.05)
    fleet = FakeFleet()
    fleet.ids, fleet.version = {2}, 1
    console = shared_console(fleet)
    await Console.refresh_drains(console)
    fleet.fail, fleet.ids, fleet.version = failure, set(), 2
    async with asyncio.timeout(5):
        await Console.refresh_drains(console)
    assert console.drains.ids() == [2]
    assert console._drains_seen == "1"  # read again next time
    assert console._drains_failing
    fleet.fail = None
    await Console.refresh_drains(console)
    assert (console.drains.ids(), console._drains_failing) == ([], False)


@pytest.mark.asyncio
async def test_one_hub_reads_nothing() -> None:
    console = types.SimpleNamespace(shared=None)
    await Console.refresh_drains(console)  # type: ignore[arg-type]
