"""An in-memory network of DHT cores (h11's ConnectionPair, for UDP): no sockets, no sleeps."""

from __future__ import annotations

import os
from collections import deque

from smartget.dht.core import DHTCore, Event
from smartget.dht.krpc import Addr


class MemNet:
    """Cores addressed ``127.0.1.x:port``; a virtual clock; datagrams delivered in order."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cores: dict[Addr, DHTCore] = {}
        self.events: dict[Addr, list[Event]] = {}
        self.down: set[Addr] = set()
        self.wire: deque[tuple[bytes, Addr, Addr]] = deque()
        self.delivered = 0

    def add(self, addr: Addr, **kwargs: object) -> DHTCore:
        core = DHTCore(os.urandom(20), now=self.now, bind_ip=addr[0], **kwargs)  # type: ignore[arg-type]
        self.cores[addr] = core
        self.events[addr] = []
        return core

    def flush(self, max_steps: int = 1_000_000) -> None:
        """Deliver until nothing is on the wire (bounded)."""
        for _ in range(max_steps):
            for src, core in self.cores.items():
                for data, dst in core.datagrams_to_send(self.now):
                    self.wire.append((data, src, dst))
                while (event := core.next_event()) is not None:
                    self.events[src].append(event)
            if not self.wire:
                return
            data, src, dst = self.wire.popleft()
            target = self.cores.get(dst)
            # a node that is down neither hears nor speaks: were its own retries and
            # refreshes delivered, peers would re-learn it right after dropping it
            if target is not None and dst not in self.down and src not in self.down:
                self.delivered += 1
                target.receive_datagram(data, src, self.now)
        raise AssertionError("the network did not quiesce")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for core in self.cores.values():
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
            self.flush()
