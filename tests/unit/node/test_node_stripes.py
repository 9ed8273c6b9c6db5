"""The swarm's disjoint piece stripes (node/engine.py): pure logic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smartget.node.policy import stripe_priorities


@given(
    members=st.lists(st.sampled_from([f"10.0.0.{i}" for i in range(20)]), min_size=2, unique=True),
    num_pieces=st.integers(min_value=0, max_value=300),
)
def test_stripes_give_every_piece_to_exactly_one_member(
    members: list[str], num_pieces: int
) -> None:
    # Every member computes its own priorities from the same set, in any order.
    lists = [stripe_priorities(num_pieces, own, list(reversed(members))) for own in members]
    assert all(p is not None and len(p) == num_pieces for p in lists)
    for index in range(num_pieces):
        favoured = [p[index] for p in lists if p is not None].count(5)
        assert favoured == 1
    assert {v for p in lists if p is not None for v in p} <= {4, 5}


def test_no_stripes_without_peers_or_membership() -> None:
    assert stripe_priorities(10, "10.0.0.1", ["10.0.0.1"]) is None
    assert stripe_priorities(10, "10.0.0.9", ["10.0.0.1", "10.0.0.2"]) is None
    assert stripe_priorities(4, "10.0.0.2", ["10.0.0.2", "10.0.0.1", "10.0.0.1"]) == [4, 5, 4, 5]
