"""A relayed message answered 'OK' survives kill -9 of the hub (DESIGN.md: "nothing
acknowledged is lost"): `smartget hub` as a process (or in this loop for a clean stop),
satellites as stdlib XML-RPC servers on 127.0.4.2-4."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hub.test_relay_cli import call, hub_process
from tests.integration.hub.test_relay_hub import SAT_IPS, WAIT, FakeSatellite, hub_at, idle

MESSAGES = 10


async def received(sat: FakeSatellite, want: list[Any]) -> list[Any]:
    """Everything ``sat`` is notified of until it has had every item of ``want``."""
    got: list[Any] = []
    async with asyncio.timeout(WAIT * 2):
        while not set(want) <= set(got):
            got.append((await sat.next_notify())["data"])
    return got


def in_order_once_each(got: list[Any]) -> list[Any]:
    """Delivery is at least once: a notify under way at the kill may come again."""
    return list(dict.fromkeys(got))


@pytest.mark.asyncio
async def test_accepted_messages_survive_kill_9_and_arrive_in_order(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    # A slow limiter, so that messages wait in it when the hub dies; a notify timeout
    # longer than the test, so that the hanging satellite's call is still under way.
    config.write_text(
        "[hub]\nrelay-rate = 4.0\nrelay-notify-timeout = 60.0\nrelay-ping-interval = 3600.0\n"
    )
    a, b, c = sats = [FakeSatellite(ip, f"pw{n}") for n, ip in enumerate(SAT_IPS)]
    back = threading.Event()

    def hang(params: dict[str, Any]) -> str:  # b is unreachable until `back` is set
        b.notified.put(params)
        back.wait(WAIT * 3)
        return "OK"

    b.server.register_function(hang, "notify")
    try:
        async with hub_process(tmp_path / "data", config) as url:
            for sat in sats:
                sat.host_id = str(
                    await call(sat, url, "relay.register", {"port": sat.port, "notify_pass": "x"})
                )
            for n in range(MESSAGES):
                assert await call(a, url, "relay.relay", {"host_id": a.host_id, "data": n}) == (
                    "OK"
                )
            # c has some, b hangs on the first one, the rest wait in the limiter
            assert [(await c.next_notify())["data"] for _ in range(2)] == [0, 1]
            assert (await b.next_notify())["data"] == 0
        # SIGKILL: nothing was flushed, drained or shut down
        back.set()  # b is back

        async with hub_process(tmp_path / "data", config) as url:
            # accepted after the restart: goes out after everything owed from before
            assert await call(a, url, "relay.relay", {"host_id": a.host_id, "data": "new"}) == (
                "OK"
            )
            want = [*range(MESSAGES), "new"]
            got_b = [0, *await received(b, want)]
            got_c = [0, 1, *await received(c, want[2:])]
            assert in_order_once_each(got_b) == want
            assert in_order_once_each(got_c) == want
            assert len(got_b) <= len(want) + 2  # at most the calls under way came again
            assert a.notified.empty()  # never to the sender
    finally:
        back.set()
        for sat in sats:
            sat.stop()


@pytest.mark.asyncio
async def test_a_clean_stop_keeps_what_is_owed_and_failed_notifies_are_not_retried(
    tmp_path: Path,
) -> None:
    a, b, c = sats = [FakeSatellite(ip, f"pw{n}") for n, ip in enumerate(SAT_IPS)]
    try:
        # one message a second: the first goes out at once, the rest wait in the limiter
        async with hub_at(tmp_path, rate=1.0, drain_timeout=0.2) as hub:
            for sat in sats:
                await sat.register(hub)
            c.stop()  # dead: its notifies fail (refused), and co2 does not retry them
            for n in range(6):
                await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": n})
            assert (await b.next_notify())["data"] == 0
            assert hub.relay.statistics()["undelivered"] in (5, 6)  # 0 may still be c's
        # stopped cleanly before the limiter let the next one out: nothing is lost
        async with hub_at(tmp_path, rate=100.0) as hub:
            assert [(await b.next_notify())["data"] for _ in range(5)] == [1, 2, 3, 4, 5]
            await idle(hub)
            assert b.notified.empty()  # exactly once: the stop saved the progress
            raw = await b.call(hub, "relay.get_satellite_props_raw", {"host_id": c.host_id})
            assert (raw["notify_fails"], raw["recv_count"]) == (6, 0)  # each failed once
            assert hub.relay.statistics()["undelivered"] == 0
    finally:
        for sat in sats:
            sat.stop()
