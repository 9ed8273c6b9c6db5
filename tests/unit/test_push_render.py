"""The push's closing lines: an efficiency only for a push whose every copy completed."""

from __future__ import annotations

from rich.console import Console

from smartget.push import FleetNode, NodeOutcome, PushResult, render


def _result(peer_error: str | None) -> PushResult:
    def node(i: int) -> FleetNode:
        return FleetNode(i, f"10.0.0.{i}", "z", 1, f"http://10.0.0.{i}:8090", "")

    seed = NodeOutcome(node(1), "seed", 100.0, done_at=0.5, peak_up=1e6, verified=True)
    peer = NodeOutcome(node(2), "peer", 100.0 if peer_error is None else 10.0)
    peer.done_at, peer.error, peer.peak_up = (
        (3.0, None, 1e6)
        if peer_error is None
        else (
            None,
            peer_error,
            1e6,
        )
    )
    peer.verified = peer_error is None
    return PushResult("http://o/f", "ab" * 20, 2_000_000, [seed, peer], makespan=3.0)


def _text(result: PushResult) -> str:
    console = Console(width=200, record=True)
    console.print(render(result))
    return console.export_text()


def test_a_complete_push_has_its_efficiency() -> None:
    text = _text(_result(None))
    assert "lower bound 2.00 s; efficiency (bound / time) 0.67" in text


def test_a_failed_push_has_no_efficiency() -> None:
    text = _text(_result("stopped answering at 10.0%"))
    assert "efficiency (bound / time)" not in text
    assert "no efficiency: not every copy completed" in text
