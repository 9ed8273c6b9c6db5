"""The status collector core: the seed's report, done detection, bad reports."""

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import CollectorError
from smartget.hub.collector import Collector, parse_report

SHA1 = "b96c157579c90b199a9ce2b5ce391ee3592942e6"


def seed_report(**changes: Any) -> dict[str, Any]:
    """The example report of seed 003, line for line."""
    report: dict[str, Any] = {
        "args": {
            "downrate": 0,
            "downtotal": 0,
            "numpeers": 0,
            "numseeds": 0,
            "percent": "0.0",
            "sha1": SHA1,
            "timeleft": 0,
            "torrentfile": "fhs-2.3.pdf.torrent",
            "uprate": 0,
            "uptotal": 0,
        },
        "event": "status_response",
        "nodeid": "beijing_127.0.0.1",
        "nodeip": "127.0.0.1",
        "nodezone": "beijing",
        "result": "",
        "retries": "0",
        "status": "Initial startup",
        "taskid": "",
        "traceback": "",
    }
    args = changes.pop("args", {})
    report["args"].update(args)
    report.update(changes)
    return report


def test_seed_example_parses() -> None:
    report = parse_report(seed_report(), now=5)
    assert (report.nodeid, report.sha1, report.status, report.percent) == (
        "beijing_127.0.0.1",
        SHA1,
        "Initial startup",
        0.0,
    )
    assert not report.done


def test_done_on_seeding_or_full_percent() -> None:
    collector = Collector()
    assert not collector.receive(parse_report(seed_report(status="downloading"), 1))
    assert collector.receive(parse_report(seed_report(args={"percent": "100.0"}), 2))
    assert collector.receive(parse_report(seed_report(status="seeding", nodeid="n2"), 3))
    # A late report that crossed on the wire does not undo "done".
    assert not collector.receive(parse_report(seed_report(status="downloading"), 4))
    assert [r.done for r in collector.progress(SHA1)] == [True, True]
    assert collector.statistics() == {"entries": 2, "done": 2, "received": 3}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "a report is a JSON object"),
        (seed_report(args={"sha1": "xyz"}), "sha1 must be 40 hex digits"),
        (seed_report(args={"sha1": ""}), "missing sha1"),
        (seed_report(nodeid=""), "missing nodeid"),
        (seed_report(args={"percent": "lots"}), "percent must be a number"),
        (seed_report(args={"percent": 150}), "percent must be at most 100"),
        (seed_report(args={"downrate": float("nan")}), "finite"),
        (seed_report(nodeid={"a": 1}), "nodeid must be a string"),
        ({**seed_report(), "args": []}, "args must be a JSON object"),
    ],
)
def test_bad_reports(body: Any, reason: str) -> None:
    with pytest.raises(CollectorError, match=reason):
        parse_report(body, now=0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_arbitrary_json_raises_only_collector_error(body: Any) -> None:
    with contextlib.suppress(CollectorError):
        parse_report(body, now=0)
