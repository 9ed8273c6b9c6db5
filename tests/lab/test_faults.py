"""Faults in the lab (issue 14): real processes, each node in its own network namespace
with its link capped at 2 MiB/s both ways. Each test asserts completion, the copies'
SHA-256, the origin's bytes and a time bound. CI runs them small (5 nodes, 8 MiB);
``benchmarks/fleet.py`` runs N = 32.

``SMARTGET_LAB_LATE_WAIT`` (seconds, default 10) is how long after a push the late
joiner comes; the issue's 5 minutes is ``SMARTGET_LAB_LATE_WAIT=300``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import httpx
import pytest

from tests.helpers import wait_until
from tests.lab.fleet import MiB, ProcFleet, PushRun, make_file
from tests.lab.lab import Lab

pytestmark = pytest.mark.slow

SIZE = 8 * MiB
LATE_WAIT = float(os.environ.get("SMARTGET_LAB_LATE_WAIT", "10"))
Fleet = Callable[[int], ProcFleet]


async def started(
    fleet_of: Fleet, count: int = 5, *, late: int = 0, node_args: tuple[str, ...] = ()
) -> tuple[ProcFleet, str]:
    """A fleet of ``count`` nodes (the last ``late`` not started) and the file's SHA-256."""
    fleet = fleet_of(count)
    expected = make_file(fleet.workdir / "origin" / "f.bin", SIZE)
    fleet.start_origin()
    fleet.start_hub()
    await fleet.wait_hub()
    fleet.start_dht()
    first = fleet.nodes[: count - late]
    for node in first:
        fleet.start_node(node, *node_args)
    await fleet.wait_origin()
    await fleet.wait_nodes(first)
    await fleet.wait_registered(len(first))
    await fleet.wait_dht(first, at_least=1, within=30)
    return fleet, expected


def at(percent: float, action: Callable[[], None]) -> Callable[[PushRun, float], object]:
    """A ``during`` hook: ``action()`` once, when a receiver first reaches ``percent``."""
    done: list[bool] = []

    async def hook(run: PushRun, elapsed: float) -> None:
        if not done and any(p.percent >= percent for p in run.nodes[1:]):
            done.append(True)
            action()

    hook.done = done  # type: ignore[attr-defined]
    return hook


def report(name: str, run: PushRun) -> None:
    bound = run.lower_bound(2 * MiB, 2 * MiB)
    print(
        f"\n{name}: makespan {run.makespan:.1f} s (seed ready {run.seed_ready:.1f} s), "
        f"bound {bound:.1f} s, origin {run.origin_bytes / run.size:.2f} F"
    )


@pytest.mark.asyncio
async def test_seed_killed_at_30_percent(fleet_of: Fleet) -> None:
    fleet, expected = await started(fleet_of)
    hook = at(30, lambda: fleet.kill("node0"))
    run = await fleet.push("f.bin", fleet.nodes[1:], within=120, during=hook)  # type: ignore[arg-type]
    report("seed killed at 30 %", run)
    assert hook.done  # type: ignore[attr-defined]
    assert all(p.done_at is not None for p in run.nodes[1:])
    fleet.verify(run, expected, [p.node for p in run.nodes[1:]])
    # The seed fetched it once; 10 s after peers stopped helping, each receiver fetches
    # its own stripe of the rest from the origin and they trade stripes (what nobody
    # had was at most 0.7 F). Measured 1.64-1.92 F in all; each receiver falling back
    # for the whole rest, as before, cost 3.2-3.6 F.
    assert run.origin_bytes <= 2.5 * SIZE
    assert run.makespan < 120


@pytest.mark.asyncio
async def test_hub_killed_at_30_percent(fleet_of: Fleet) -> None:
    fleet, expected = await started(fleet_of)
    hook = at(30, lambda: fleet.kill("hub"))
    run = await fleet.push("f.bin", fleet.nodes[1:], within=120, during=hook)  # type: ignore[arg-type]
    report("hub killed at 30 %", run)
    assert hook.done  # type: ignore[attr-defined]
    assert all(p.done_at is not None for p in run.nodes)
    fleet.verify(run, expected)
    assert run.origin_bytes <= 1.1 * SIZE
    assert run.makespan < 90


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["striped", "pipelined"])
async def test_a_striped_push_completes_with_its_hub_killed_at_30_percent(
    fleet_of: Fleet, mode: str
) -> None:
    """As a hub's job pushes. Striped: each node fetches its own stripe from the origin,
    the seed makes the torrent from their digests, all trade the rest. Pipelined: the
    seed makes the torrent from the origin's, each node fetches its stripe while trading
    (and helps with the others' once done)."""
    fleet, expected = await started(fleet_of)
    done: list[bool] = []

    async def kill_hub(run: PushRun, elapsed: float) -> None:
        if not done and any(p.percent >= 30 for p in run.nodes):
            done.append(True)
            fleet.kill("hub")

    run = await fleet.push(
        "f.bin",
        fleet.nodes[1:],
        within=120,
        during=kill_hub,
        striped=True,
        pipelined=mode == "pipelined",
    )
    bound = run.lower_bound(2 * MiB, 2 * MiB)
    print(
        f"\n{mode}, hub killed at 30 %: makespan {run.makespan:.1f} s (made at "
        f"{run.seed_ready:.1f} s), bound {bound:.1f} s, origin {run.origin_bytes / SIZE:.2f} F"
    )
    assert done
    assert all(p.done_at is not None for p in run.nodes)  # the seed downloads too
    fleet.verify(run, expected)
    # Each stripe crossed the origin's link about once; striped, no node took its stripe
    # from peers. Pipelined, a segment twice where a helper met a stripe's own fetch: of
    # 8 MiB, 1.00-1.06 F in 6 runs and 1.14 F once in a whole-suite run.
    assert SIZE <= run.origin_bytes <= (1.1 if mode == "striped" else 1.2) * SIZE
    if mode == "striped":
        assert all(p.downtotal <= SIZE - SIZE // 5 // 2 for p in run.nodes), run.nodes
    assert run.makespan < 90


@pytest.mark.asyncio
async def test_node_killed_at_50_percent_restarts_and_resumes(fleet_of: Fleet) -> None:
    fleet, expected = await started(fleet_of)
    victim = fleet.nodes[1]
    restarted: list[float] = []

    async def kill_and_restart(run: PushRun, elapsed: float) -> None:
        mine = next(p for p in run.nodes if p.node is victim)
        if not restarted and mine.percent >= 50:
            fleet.kill("node1")
            restarted.append(mine.percent)
            fleet.start_node(victim)

    run = await fleet.push("f.bin", fleet.nodes[1:], within=120, during=kill_and_restart)
    report("node killed at 50 % and restarted", run)
    assert restarted, "the node was not killed"
    assert restarted[0] < 100
    assert all(p.done_at is not None for p in run.nodes)
    fleet.verify(run, expected)
    assert run.origin_bytes <= 1.1 * SIZE
    assert "restored" in fleet.log_text("node1")
    assert run.makespan < 120


@pytest.mark.asyncio
async def test_partition_between_zones_for_20_s(fleet_of: Fleet, lab: Lab) -> None:
    """Nodes that wait 30 s for peers before using the origin's web seed ride out a 20 s
    partition (with the default 10 s, the cut-off zone fetched 0.7 F from the origin)."""
    fleet, expected = await started(fleet_of, node_args=("--webseed-fallback", "30"))
    zone_a = [n.host for n in fleet.nodes if n.zone == "zone-a"]
    zone_b = [n.host for n in fleet.nodes if n.zone == "zone-b"]
    parted: list[float] = []

    async def partition(run: PushRun, elapsed: float) -> None:
        if not parted and any(p.percent >= 20 for p in run.nodes[1:]):
            lab.partition(zone_a, zone_b)
            parted.append(time.monotonic())
        elif len(parted) == 1 and time.monotonic() - parted[0] >= 20:
            lab.heal()
            parted.append(time.monotonic())

    run = await fleet.push("f.bin", fleet.nodes[1:], within=150, during=partition)
    if len(parted) == 1:
        lab.heal()
    report("partition of 20 s between the zones", run)
    assert parted, "no partition happened"
    assert all(p.done_at is not None for p in run.nodes)
    fleet.verify(run, expected)
    assert run.origin_bytes <= 1.2 * SIZE
    assert run.makespan < 150


@pytest.mark.asyncio
async def test_two_percent_loss_on_every_link(fleet_of: Fleet, lab: Lab) -> None:
    fleet, expected = await started(fleet_of)
    for host in lab.hosts.values():
        lab.loss(host, 2)
    run = await fleet.push("f.bin", fleet.nodes[1:], within=150)
    report("2 % loss on every link", run)
    bound = run.lower_bound(2 * MiB, 2 * MiB)
    print(f"efficiency (bound / time after the seed was ready) "
          f"{bound / (run.makespan - run.seed_ready):.2f}")  # fmt: skip
    assert sum(lab.drops(h) for h in lab.hosts.values()) > 0
    assert all(p.done_at is not None for p in run.nodes)
    fleet.verify(run, expected)
    assert run.origin_bytes <= 1.1 * SIZE
    assert run.makespan < 150


@pytest.mark.asyncio
async def test_a_full_disk_fails_with_its_reason(fleet_of: Fleet, lab: Lab) -> None:
    fleet = fleet_of(4)
    small = fleet.nodes[3]
    with lab.small_disk(fleet.workdir / "small", SIZE // 2) as disk:
        small.wwwroot = disk
        fleet.start_origin()
        fleet.start_hub()
        await fleet.wait_hub()
        for node in fleet.nodes:
            fleet.start_node(node)
        await fleet.wait_origin()
        await fleet.wait_nodes(fleet.nodes)
        await fleet.wait_registered(len(fleet.nodes))
        expected = make_file(fleet.workdir / "origin" / "f.bin", SIZE)
        run = await fleet.push("f.bin", fleet.nodes[1:], within=120)
        failed = next(p for p in run.nodes if p.node is small)
        assert failed.status == "failed"
        assert "space" in failed.error.lower(), failed.error
        others = [p for p in run.nodes if p.node is not small]
        assert all(p.done_at is not None for p in others)
        fleet.verify(run, expected, [p.node for p in others])
        assert run.origin_bytes <= 1.1 * SIZE

        async def collector_says_failed() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                reply = await client.get(
                    f"{fleet.hub_url}/api/progress", params={"sha1": run.sha1},
                    headers=fleet.auth,
                )  # fmt: skip
            return any(
                r["nodeid"] == small.nodeid and r["status"] == "failed" for r in reply.json()
            )

        await wait_until(collector_says_failed, 20, "the collector showing the failure")
        await fleet.close()  # before the tmpfs goes


@pytest.mark.asyncio
@pytest.mark.parametrize("hub", ["up", "down"])
async def test_late_joiner_fetches_from_peers(fleet_of: Fleet, hub: str) -> None:
    fleet, expected = await started(fleet_of, 5, late=1)
    late = fleet.nodes[-1]
    run = await fleet.push("f.bin", fleet.nodes[1:-1], within=120)
    assert all(p.done_at is not None for p in run.nodes)
    if hub == "down":
        fleet.kill("hub")
    # The scenario's idle time (not a wait for some state): the late node comes later.
    await asyncio.sleep(LATE_WAIT)
    before = await fleet.origin_sent()
    fleet.start_node(late)
    await fleet.wait_nodes([late])
    asked = time.monotonic()
    source = fleet.nodes[1]
    await fleet.task(
        late, "download",
        {"torrentfileurl": run.torrent_url.replace(fleet.nodes[0].files_url, source.files_url)},
    )  # fmt: skip

    async def complete() -> bool:
        entry = await fleet.torrent_status(late, run.sha1)
        return entry is not None and bool(entry["complete"])

    await wait_until(complete, 60, f"the late joiner complete (hub {hub})")
    took = time.monotonic() - asked
    origin = await fleet.origin_sent() - before
    print(f"\nlate joiner, hub {hub}: {took:.1f} s, origin {origin / SIZE:.3f} F")
    run.nodes[-1:] = []
    fleet.verify(run, expected, [late])
    assert origin < 0.05 * SIZE
    assert took < 60
