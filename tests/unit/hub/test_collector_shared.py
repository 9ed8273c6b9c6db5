"""The collector's pure parts for several hubs (issue 13): who may report, the copy a
hub keeps of the fleet's reports, and how a report is stored in Redis."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from smartget.errors import CollectorError
from smartget.hub.collector import Collector, own_report, parse_report, reporter_ip
from smartget.hub.state.functions import REPORTS_LIBRARY
from smartget.hub.state.keys import Keys, report_entry, report_from_entry

SHA1 = "c0" * 20


def body(nodeid: str = "zone_10.0.0.1", status: str = "downloading", **more: Any) -> Any:
    return {"nodeid": nodeid, "status": status, "args": {"sha1": SHA1, "percent": 10, **more}}


def test_the_node_id_names_its_address() -> None:
    assert reporter_ip("beijing_10.0.0.1") == "10.0.0.1"
    assert reporter_ip("a_b_10.0.0.1") == "10.0.0.1"
    assert reporter_ip("10.0.0.1") == "10.0.0.1"


def test_a_node_reports_for_itself_only() -> None:
    assert own_report(body(), "10.0.0.1", 5.0).nodeid == "zone_10.0.0.1"
    with pytest.raises(CollectorError, match="reports for itself only"):
        own_report(body(), "10.0.0.2", 5.0)
    with pytest.raises(CollectorError, match="reports for itself only"):
        own_report({**body(), "nodeip": "10.0.0.9"}, "10.0.0.1", 5.0)
    with pytest.raises(CollectorError, match="sha1"):
        own_report({"nodeid": "z_10.0.0.1", "args": {}}, "10.0.0.1", 5.0)


def test_the_copy_follows_the_shared_state() -> None:
    copy = Collector(max_entries=1, max_per_node=1)
    first = parse_report(body(status="seeding", percent=100), 1.0)
    copy.mirror(first, 7)
    # The shared state decided: a copy takes what it holds, past its own caps too, and a
    # "downloading" after "seeding" (Redis kept it; it was not stale there).
    later = parse_report(body(status="downloading"), 2.0)
    other = parse_report(body("zone_10.0.0.2"), 2.0)
    copy.mirror(later, 9)
    copy.mirror(other, 8)
    assert [r.nodeid for r in copy.progress(SHA1)] == ["zone_10.0.0.1", "zone_10.0.0.2"]
    assert copy.progress(nodeid="zone_10.0.0.1")[0].status == "downloading"
    assert copy.received == 9
    copy.load([first], 12)
    assert copy.progress() == [first]
    assert copy.statistics() == {"entries": 1, "done": 1, "received": 12}
    assert copy.forget(SHA1) == 1
    assert copy.progress() == []


def test_a_report_entry_round_trips_with_the_hubs_clock() -> None:
    report = parse_report({**body(taskid="t1", torrentfile="f.torrent"), "nodezone": "z"}, 3.0)
    encoded = report_entry(report)
    assert "received_at" not in encoded
    assert '"done"' not in encoded
    stored = f"0|1700000000250|{encoded}"  # as sg_report stores it: done, Redis ms, JSON
    back = report_from_entry(stored, lambda wall: wall - 1_699_999_000.0)
    assert back == dataclasses.replace(report, received_at=1000.25)


def test_every_report_key_is_in_the_fleets_slot() -> None:
    keys = Keys()
    for key in (
        keys.report_seq,
        keys.reports(SHA1),
        keys.reports_of_node("{other}_10.0.0.1"),
        keys.report_times,
        keys.report_log,
    ):
        # Redis Cluster hashes the first {...} of a key: always the fleet's tag.
        assert re.match(r"^[^{]*\{([^}]*)\}", key).group(1) == "fleet", key  # type: ignore[union-attr]


def test_the_lua_names_the_keys_python_reads() -> None:
    """sg_report writes the keys RedisReports reads (both built from the prefix P)."""
    prefix = Keys().prefix
    for suffix in ("r:", "rn:", "ri:", "rt", "rc", "rlog", "ip:"):
        assert f"P .. '{suffix}'" in REPORTS_LIBRARY, suffix
    assert Keys().report_seq == prefix + "rq"
    assert Keys().reports(SHA1) == prefix + "r:" + SHA1
    assert Keys().reports_of_node("n") == prefix + "rn:n"
    assert Keys().report_times == prefix + "rt"
    assert Keys().report_log == prefix + "rlog"
