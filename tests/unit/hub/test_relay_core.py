"""The relay's satellite registry and limiter bucket: pure logic, no sockets."""

from __future__ import annotations

import pytest

from smartget.errors import RelayError
from smartget.hub.relay.core import (
    RelayFullError,
    RelayNotPermittedError,
    SatelliteNotFoundError,
    SatelliteRegistry,
    split_host_id,
)


def test_register_makes_host_id_from_caller_address() -> None:
    reg = SatelliteRegistry(max_satellites=3)
    sat = reg.register("10.0.0.5", 8000, 1000.0, nick="", plugins=["chat"], notify_pass="pw")
    assert sat.host_id == "10.0.0.5:8000"
    assert sat.nick == "10.0.0.5:8000"  # seed: nick defaults to host_id
    assert sat.ctime == 1000.0
    assert sat.ping_current == -1.0
    assert reg.host_ids() == ["10.0.0.5:8000"]
    assert "10.0.0.5:8000" in reg


def test_register_beyond_max_is_refused_with_the_limit() -> None:
    reg = SatelliteRegistry(max_satellites=2)
    reg.register("10.0.0.1", 1, 0.0)
    reg.register("10.0.0.2", 1, 0.0)
    with pytest.raises(RelayFullError, match="2 of 2"):
        reg.register("10.0.0.3", 1, 0.0)
    # refreshing an existing one is fine at the limit
    sat = reg.register("10.0.0.1", 1, 5.0, nick="again", notify_pass="new")
    assert (sat.nick, sat.notify_pass, sat.ctime) == ("again", "new", 0.0)
    assert len(reg) == 2


def test_bad_port_is_refused() -> None:
    reg = SatelliteRegistry()
    with pytest.raises(RelayError, match="port"):
        reg.register("10.0.0.1", 0, 0.0)


def test_only_the_satellites_own_address_may_deregister() -> None:
    reg = SatelliteRegistry()
    reg.register("10.0.0.1", 9, 0.0)
    with pytest.raises(RelayNotPermittedError, match=r"only 10\.0\.0\.1"):
        reg.deregister("10.0.0.1:9", "10.0.0.2")
    with pytest.raises(RelayNotPermittedError, match="anonymous"):
        reg.deregister("10.0.0.1:9", None)
    reg.deregister("10.0.0.1:9", "10.0.0.1")
    assert len(reg) == 0
    with pytest.raises(SatelliteNotFoundError, match="no satellite"):
        reg.deregister("10.0.0.1:9", "10.0.0.1")


def test_malformed_host_id_says_what_is_expected() -> None:
    with pytest.raises(SatelliteNotFoundError, match=r"expected 'ip:port'"):
        SatelliteRegistry().get("nonsense")
    assert split_host_id("::1:80") == ("::1", 80)


def test_relay_counts_sender_and_recipients_are_the_others() -> None:
    reg = SatelliteRegistry()
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        reg.register(ip, 7, 0.0)
    sender = reg.accept_relay("10.0.0.1:7", "10.0.0.1", 50.0)
    assert (sender.send_count, sender.send_time) == (1, 50.0)
    assert [s.host_id for s in reg.recipients("10.0.0.1:7")] == ["10.0.0.2:7", "10.0.0.3:7"]
    with pytest.raises(RelayNotPermittedError):
        reg.accept_relay("10.0.0.1:7", "10.0.0.2", 51.0)
    reg.note_notify("10.0.0.2:7", True, 60.0)
    reg.note_notify("10.0.0.3:7", False, 60.0)
    reg.note_notify("10.9.9.9:7", True, 60.0)  # gone meanwhile: ignored
    two, three = reg.get("10.0.0.2:7"), reg.get("10.0.0.3:7")
    assert (two.recv_count, two.recv_time, two.notify_fails) == (1, 60.0, 0)
    assert (three.recv_count, three.notify_fails) == (0, 1)
    assert reg.statistics()["relayed"] == 1


def test_ping_statistics_and_drop_after_n_failures_in_a_row() -> None:
    reg = SatelliteRegistry(ping_fails_limit=3)
    reg.register("10.0.0.1", 7, 0.0)
    hid = "10.0.0.1:7"
    assert reg.note_ping(hid, 4.0) is None
    assert reg.note_ping(hid, 2.0) is None
    assert reg.note_ping(hid, None) is None
    assert reg.note_ping(hid, None) is None
    assert reg.note_ping(hid, 6.0) is None  # an answer resets the run of failures
    sat = reg.get(hid)
    assert (sat.ping_count, sat.ping_fails, sat.ping_fails_in_row) == (5, 2, 0)
    assert (sat.ping_current, sat.ping_min, sat.ping_max, sat.ping_avg) == (6.0, 2.0, 6.0, 4.0)
    assert reg.note_ping(hid, None) is None
    assert reg.note_ping(hid, None) is None
    dropped = reg.note_ping(hid, None)
    assert dropped is sat
    assert hid not in reg
    assert reg.statistics()["dropped"] == 1
    assert reg.note_ping(hid, None) is None  # already gone


def test_changes_record_upserts_and_deletes_once() -> None:
    reg = SatelliteRegistry()
    reg.register("10.0.0.1", 1, 0.0)
    reg.register("10.0.0.2", 1, 0.0)
    changes = reg.drain_changes()
    assert sorted(s.host_id for s in changes.upserts) == ["10.0.0.1:1", "10.0.0.2:1"]
    assert not reg.drain_changes()
    reg.deregister("10.0.0.1:1", "10.0.0.1")
    changes = reg.drain_changes()
    assert (changes.upserts, changes.deletes) == ([], ["10.0.0.1:1"])


def test_raw_props_never_hold_the_notify_pass() -> None:
    reg = SatelliteRegistry()
    sat = reg.register("10.0.0.1", 1, 0.0, notify_pass="secret")
    assert "secret" not in repr(sat.raw())
    assert sat.raw()["addr"] == ["10.0.0.1", 1]
