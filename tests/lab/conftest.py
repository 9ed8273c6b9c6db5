"""Fixtures of the fleet lab: a lab (skipped where it cannot run) and fleets in it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.lab.fleet import MiB, ProcFleet
from tests.lab.lab import Lab, available, leftovers

LINK = 2 * MiB  # bytes/s each way on every node's link in CI's lab tests


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = available()
    if why is not None:
        pytest.skip(why)
    with Lab() as made:
        yield made
    assert leftovers(made.prefix) == [], "the lab left something behind"


@pytest_asyncio.fixture
async def fleet_of(lab: Lab, tmp_path: Path) -> AsyncIterator[Callable[[int], ProcFleet]]:
    """``fleet_of(n)``: hosts for an origin (a standalone DHT beside it), a hub and n
    nodes, each node's link capped at LINK both ways; nothing started yet."""
    made: list[ProcFleet] = []

    def build(count: int) -> ProcFleet:
        origin, hub = lab.add_host("origin"), lab.add_host("hub")
        nodes = [lab.add_host(f"n{i}") for i in range(count)]
        for host in nodes:
            lab.cap(host, LINK)
        made.append(ProcFleet(tmp_path, origin=origin, hub=hub, nodes=nodes, dht=origin))
        return made[-1]

    try:
        yield build
    finally:
        for fleet in made:
            await fleet.close()
