"""An iterative Kademlia lookup (BEP 5 "find_node" / "get_peers"), as a state machine.

Theory of operation
-------------------
Sans-IO: the core asks :meth:`Lookup.next_queries` whom to query, sends, and reports
each answer (:meth:`Lookup.on_response`) or final timeout (:meth:`Lookup.on_failure`).
Candidates are ordered by XOR distance to the target; at most ``alpha`` (3) queries are
in flight; the lookup converges when the ``k`` (8) closest candidates that have not
failed have all answered (the issue's stop rule), or when nobody is left to ask.
Bootstrap addresses come without an id: they sort first and get their distance when
they answer. The candidate set is bounded, keeping the closest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from smartget.dht.krpc import Addr

__all__ = ["ALPHA", "Candidate", "CandidateState", "Lookup"]

ALPHA: Final = 3
K: Final = 8
MAX_CANDIDATES: Final = 256


class CandidateState(Enum):
    NEW = 0  # known, not asked yet
    IN_FLIGHT = 1  # asked, waiting (retries included)
    RESPONDED = 2  # answered: counts toward convergence
    FAILED = 3  # timed out or answered with an error: ignored from now on


@dataclass(slots=True)
class Candidate:
    addr: Addr
    id: bytes | None
    distance: int  # -1 while the id is unknown (bootstrap address)
    state: CandidateState = CandidateState.NEW
    token: bytes | None = None


@dataclass
class Lookup:
    """One lookup of ``target``; ``kind`` is ``find_node`` or ``get_peers``."""

    lookup_id: int
    target: bytes
    kind: bytes
    alpha: int = ALPHA
    k: int = K
    limit: int | None = None  # get_peers: stop after this many distinct peers
    candidates: dict[Addr, Candidate] = field(default_factory=dict)
    peers: dict[Addr, None] = field(default_factory=dict)  # insertion-ordered set
    queries: int = 0
    responses: int = 0
    in_flight: int = 0
    started: float = 0.0
    done: bool = False

    def __post_init__(self) -> None:
        self._target = int.from_bytes(self.target, "big")

    def add(self, node_id: bytes | None, addr: Addr) -> None:
        """Learn of a candidate (from the table, a bootstrap list or a ``nodes`` reply)."""
        if addr in self.candidates:
            return
        distance = -1 if node_id is None else int.from_bytes(node_id, "big") ^ self._target
        if len(self.candidates) >= MAX_CANDIDATES:
            worst = max(
                (c for c in self.candidates.values() if c.state is CandidateState.NEW),
                key=lambda c: c.distance,
                default=None,
            )
            if worst is None or worst.distance <= distance:
                return
            del self.candidates[worst.addr]
        self.candidates[addr] = Candidate(addr, node_id, distance)

    def _ranked(self) -> list[Candidate]:
        live = [c for c in self.candidates.values() if c.state is not CandidateState.FAILED]
        live.sort(key=lambda c: c.distance)
        return live

    def next_queries(self) -> list[Candidate]:
        """Candidates to query now; marks them in flight. Sets ``done`` on convergence."""
        if self.done:
            return []
        if self.limit is not None and len(self.peers) >= self.limit:
            self.done = True
            return []
        out = []
        closest = self._ranked()[: self.k]
        for cand in closest:
            if self.in_flight >= self.alpha:
                break
            if cand.state is CandidateState.NEW:
                cand.state = CandidateState.IN_FLIGHT
                self.in_flight += 1
                self.queries += 1
                out.append(cand)
        if not out and self.in_flight == 0:
            # nothing new among the k closest and nobody pending: converged (or empty)
            self.done = True
        return out

    def on_response(
        self,
        addr: Addr,
        node_id: bytes,
        nodes: Sequence[tuple[bytes, Addr]],
        peers: list[Addr],
        token: bytes | None,
    ) -> list[Addr]:
        """Record an answer; return the peers not seen before."""
        cand = self.candidates.get(addr)
        if cand is None or cand.state is not CandidateState.IN_FLIGHT:
            return []
        self.in_flight -= 1
        self.responses += 1
        cand.state = CandidateState.RESPONDED
        cand.token = token
        if cand.id is None:
            cand.id = node_id
            cand.distance = int.from_bytes(node_id, "big") ^ self._target
        for nid, naddr in nodes:
            self.add(nid, naddr)
        fresh = [p for p in peers if p not in self.peers]
        for peer in fresh:
            self.peers[peer] = None
        return fresh

    def on_failure(self, addr: Addr) -> None:
        cand = self.candidates.get(addr)
        if cand is not None and cand.state is CandidateState.IN_FLIGHT:
            self.in_flight -= 1
            cand.state = CandidateState.FAILED

    def closest_responded(self, k: int | None = None) -> list[Candidate]:
        """The closest candidates that answered (for announce_peer, with their tokens)."""
        done = [c for c in self._ranked() if c.state is CandidateState.RESPONDED]
        return done[: k or self.k]
