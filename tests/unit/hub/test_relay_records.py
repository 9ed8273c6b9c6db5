"""The relay's satellites and messages as Redis holds them (relay/records.py), and the
registry's mirror operations the Redis hub uses (relay/core.py)."""

from __future__ import annotations

import xmlrpc.client

import pytest

from smartget.hub.relay.core import Satellite, SatelliteRegistry
from smartget.hub.relay.outbox import Outbox
from smartget.hub.relay.records import (
    DELIVERER_FIELDS,
    SATELLITE_FIELDS,
    RecordError,
    deliverer_record,
    merge_record,
    message_from_record,
    message_params,
    satellite_from_record,
    satellite_record,
)


def busy_satellite() -> Satellite:
    sat = Satellite("10.0.0.5", 8000, "nick", ["chat", "files"], "pw", 1_700_000_000.25)
    sat.ping_current, sat.ping_count, sat.ping_min, sat.ping_max = 1.5, 4, 0.1, 9.75
    sat.ping_total, sat.ping_answered, sat.ping_fails, sat.ping_fails_in_row = 11.0, 3, 1, 1
    sat.send_count, sat.send_time, sat.recv_count, sat.recv_time = 7, 1.5e9, 2, 1.6e9
    sat.notify_fails = 5
    return sat


def test_a_satellite_comes_back_exactly() -> None:
    sat = busy_satellite()
    record = satellite_record(sat)
    assert set(record) == set(SATELLITE_FIELDS)
    assert all(isinstance(v, str) for v in record.values())
    assert satellite_from_record(record) == sat


def test_a_registration_record_has_fresh_statistics() -> None:
    record = {"ip": "10.0.0.5", "port": "80", "nick": "n", "plugins": "[]", "ctime": "5.0"}
    sat = satellite_from_record(record)
    assert (sat.host_id, sat.ping_current, sat.send_count, sat.notify_pass) == (
        "10.0.0.5:80",
        -1.0,
        0,
        "",
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"port": "80"},
        {"ip": "10.0.0.5"},
        {"ip": "10.0.0.5", "port": "x"},
        {"ip": "10.0.0.5", "port": "0"},
        {"ip": "10.0.0.5", "port": "80", "plugins": "{}"},
        {"ip": "10.0.0.5", "port": "80", "plugins": "not json"},
        {"ip": "10.0.0.5", "port": "80", "ping_count": "1.5"},
    ],
)
def test_a_broken_record_is_refused(broken: dict[str, str]) -> None:
    with pytest.raises(RecordError):
        satellite_from_record(broken)


def test_the_deliverer_keeps_its_own_statistics_and_takes_the_rest() -> None:
    mine = busy_satellite()
    theirs = busy_satellite()
    theirs.send_count, theirs.nick, theirs.recv_count, theirs.ping_count = 99, "new", 0, 0
    merge_record(mine, satellite_record(theirs), delivering=True)
    assert (mine.send_count, mine.nick) == (99, "new")  # others' fields from Redis
    assert (mine.recv_count, mine.ping_count) == (2, 4)  # its own kept
    theirs.ping_fails_in_row = 0  # registered again through another hub
    merge_record(mine, satellite_record(theirs), delivering=True)
    assert mine.ping_fails_in_row == 0
    merge_record(mine, satellite_record(theirs), delivering=False)
    assert mine == theirs
    assert set(deliverer_record(mine)) == set(DELIVERER_FIELDS)
    assert "send_count" not in DELIVERER_FIELDS  # counted by the accepting hub


def test_a_message_comes_back_with_its_types() -> None:
    params = {
        "host_id": "10.0.0.5:8000",
        "data": {"when": xmlrpc.client.DateTime("20240101T10:00:00"), "blob": b"\x00\xff"},
    }
    record = {"s": "10.0.0.5:8000", "a": repr(1.25), "x": message_params(params)}
    msg = message_from_record(7, record, {"10.0.0.6:1"}, max_bytes=1 << 20)
    assert (msg.seq, msg.sender, msg.accepted, msg.pending) == (
        7,
        "10.0.0.5:8000",
        1.25,
        {"10.0.0.6:1"},
    )
    assert msg.params["data"]["blob"] == xmlrpc.client.Binary(b"\x00\xff")
    assert msg.params["data"]["when"] == xmlrpc.client.DateTime("20240101T10:00:00")
    with pytest.raises(RecordError):
        message_from_record(8, {"s": "x", "a": "1"}, set(), max_bytes=1 << 20)
    with pytest.raises(RecordError):
        message_from_record(8, {**record, "x": "<nope"}, set(), max_bytes=1 << 20)


def test_the_registry_mirrors_the_fleet() -> None:
    reg = SatelliteRegistry(max_satellites=2, max_per_ip=1)
    a = Satellite("10.0.0.1", 1, "a", [], "", 0.0)
    b = Satellite("10.0.0.2", 2, "b", [], "", 0.0)
    c = Satellite("10.0.0.1", 3, "c", [], "", 0.0)
    # The fleet's caps were checked in Redis: a mirror takes what the fleet holds.
    assert reg.replace_all([a, b, c]) == []
    assert reg.host_ids() == [a.host_id, b.host_id, c.host_id]
    assert not reg.drain_changes()
    gone = reg.replace_all([c, a])
    assert gone == [b]
    assert reg.host_ids() == [c.host_id, a.host_id]
    fresh = Satellite("10.0.0.1", 1, "renamed", [], "", 0.0)
    assert reg.mirror(fresh) is a
    assert a.nick == "renamed"
    assert reg.unmirror(c.host_id) is c
    assert reg.unmirror(c.host_id) is None
    assert reg.host_ids() == [a.host_id]
    assert not reg.drain_changes()


def test_an_outbox_holds_only_its_own_messages() -> None:
    box = Outbox(10)
    msg = box.accept("a:1", {"data": 1}, ["b:2"], 0.0)
    assert box.holds(msg)
    other = Outbox(10)
    (again,) = other.restore([msg], ["b:2"])
    assert other.holds(again)
    assert not Outbox(10).holds(msg)
