"""The console's sans-IO cores: sessions and CSRF, the throttle, the chart history, drained
nodes, the snapshot. No sockets, no sleeps: time comes in as numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import RegistryError
from smartget.hub.collector import Collector, Report
from smartget.hub.commands import FromNode, FromOperator
from smartget.hub.console.drain import DrainingCommands, DrainList
from smartget.hub.console.history import History, Sample, sample_of
from smartget.hub.console.session import LoginThrottle, SessionKeys
from smartget.hub.console.views import Limits, snapshot
from smartget.hub.registry import Registry
from smartget.hub.tracker import Tracker

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def keys(token: str = "hub-token", **kwargs: int) -> SessionKeys:
    return SessionKeys(SECRET, token, **kwargs)


# -- sessions -------------------------------------------------------------------------------


def test_only_the_token_signs_in_and_the_cookie_checks() -> None:
    k = keys()
    assert k.sign_in("wrong", NOW) is None
    assert k.sign_in(None, NOW) is None
    cookie = k.sign_in("hub-token", NOW)
    assert cookie is not None
    session = k.check(cookie, NOW + 1)
    assert session is not None
    assert session.expires == int(NOW) + k.lifetime
    # Another hub (another secret) or another token: not a session here.
    assert SessionKeys(b"t" * 32, "hub-token").check(cookie, NOW) is None
    assert keys("new-token").check(cookie, NOW) is None


def test_expiry_is_inside_the_mac() -> None:
    k = keys(lifetime=60)
    cookie = k.sign_in("hub-token", NOW)
    assert cookie is not None
    assert k.check(cookie, NOW + 59) is not None
    assert k.check(cookie, NOW + 60) is None
    version, expires, nonce, mac = cookie.split(".")
    stretched = f"{version}.{int(expires) + 3600}.{nonce}.{mac}"
    assert k.check(stretched, NOW + 61) is None


@given(st.text(max_size=300))
def test_arbitrary_cookies_are_refused(cookie: str) -> None:
    assert keys().check(cookie, NOW) is None


def test_csrf_token_is_per_session_and_sign_out_revokes() -> None:
    k = keys()
    a = k.check(k.sign_in("hub-token", NOW, nonce=b"a" * 16), NOW)
    b = k.check(k.sign_in("hub-token", NOW, nonce=b"b" * 16), NOW)
    assert a is not None
    assert b is not None
    assert k.csrf_matches(a, k.csrf_token(a))
    assert not k.csrf_matches(a, k.csrf_token(b))
    assert not k.csrf_matches(a, None)
    assert not k.csrf_matches(a, "")
    cookie = k.sign_in("hub-token", NOW, nonce=b"a" * 16)
    k.sign_out(a, NOW)
    assert k.check(cookie, NOW) is None
    assert k.check(k.sign_in("hub-token", NOW, nonce=b"b" * 16), NOW) == b


def test_revocations_are_bounded() -> None:
    k = keys(max_revoked=3)
    for i in range(10):
        session = k.check(k.sign_in("hub-token", NOW, nonce=bytes([i]) * 16), NOW)
        assert session is not None
        k.sign_out(session, NOW)
    assert k.statistics()["revoked"] <= 3


def test_throttle_counts_failures_per_address_and_forgets() -> None:
    throttle = LoginThrottle(limit=3, window=60, max_addresses=2)
    for _ in range(3):
        assert throttle.allowed("1.1.1.1", 0)
        throttle.failed("1.1.1.1", 0)
    assert not throttle.allowed("1.1.1.1", 30)
    assert throttle.allowed("2.2.2.2", 30)
    assert throttle.allowed("1.1.1.1", 61)
    for ip in ("3.3.3.3", "4.4.4.4", "5.5.5.5"):
        throttle.failed(ip, 0)
    assert len(throttle._failures) == 2


# -- history -------------------------------------------------------------------------------


def report(nodeid: str, percent: float, at: float, **extra: float) -> Report:
    return Report(
        nodeid=nodeid,
        nodeip="127.0.0.1",
        nodezone="z",
        sha1="ab" * 20,
        status="downloading" if percent < 100 else "seeding",
        percent=percent,
        received_at=at,
        torrentfile="http://n/a.bin.torrent",
        **extra,  # type: ignore[arg-type]
    )


def test_history_keeps_one_hour_and_one_sample_per_step() -> None:
    history = History(span=60, every=5)
    for i in range(100):
        at = NOW + i * 5
        assert history.due(at)
        history.add(Sample(at, i, i, 1, 2, 3, 3))
        assert not history.due(at + 1)
    assert len(history) == 13
    columns = history.columns(NOW + 99 * 5)
    assert columns["at"][-1] == NOW + 495
    assert columns["at"][0] >= NOW + 495 - 60


def test_sample_counts_fresh_unfinished_reports() -> None:
    reports = [
        report("a", 50, at=100, uprate=10, downrate=100),
        report("b", 100, at=100, uprate=999, downrate=999),  # done: its last word
        report("c", 20, at=50, uprate=999, downrate=999),  # stale
    ]
    sample = sample_of(reports, {"swarms": 2, "peers": 5}, {"nodes": 3}, at=NOW, now=101)
    assert (sample.up, sample.down, sample.swarms, sample.peers) == (10, 100, 2, 5)


# -- drains --------------------------------------------------------------------------------


def fleet() -> tuple[Registry, DrainingCommands]:
    registry = Registry(node_ttl=10, zombie_grace=100)
    commands = DrainingCommands(registry, Tracker(), Collector())
    for port in (1, 2):
        commands.register(FromNode(f"10.0.0.{port}"), 8090, 0, status=4)
    return registry, commands


def test_a_drained_node_stays_at_zero_until_brought_back() -> None:
    registry, commands = fleet()
    commands.drain(1, 1)
    assert registry.get_node_by_id(1).status == 0  # type: ignore[union-attr]
    commands.set_status(FromNode("10.0.0.1"), 1, 7, 2)  # its heartbeat
    assert registry.get_node_by_id(1).status == 0  # type: ignore[union-attr]
    assert [n.node_id for n in commands.request_nodes(FromOperator(), 5)] == [2]
    with pytest.raises(RegistryError):  # a node may still only set its own
        commands.set_status(FromNode("10.0.0.2"), 1, 7, 2)
    assert commands.undrain(1, 3).status == 7
    assert 1 not in commands.drains
    assert 1 in [n.node_id for n in commands.request_nodes(FromOperator(), 5)]


def test_drains_survive_as_data_and_forget_unknown_nodes() -> None:
    _, commands = fleet()
    commands.drain(2, 1)
    restored = DrainList()
    restored.load(commands.drains.dump(), known={1})
    assert len(restored) == 0
    restored.load(commands.drains.dump(), known={1, 2})
    assert restored.ids() == [2]
    with pytest.raises(RegistryError):
        restored.load(b"{not json", known={1})


def test_zombies_cannot_be_drained_and_deregistering_forgets_the_drain() -> None:
    registry, commands = fleet()
    commands.drain(1, 1)
    registry.expire(50)  # both silent past the TTL
    with pytest.raises(RegistryError, match="zombie"):
        commands.drain(2, 50)
    assert commands.undrain(1, 51).is_zombie  # a silent node stays a zombie
    commands.deregister(FromOperator(), 2)
    assert 2 not in commands.drains


# -- the snapshot --------------------------------------------------------------------------


def test_snapshot_groups_reports_into_pushes_and_caps_lists() -> None:
    registry, commands = fleet()
    commands.drain(2, 1)
    collector = Collector()
    for i in range(5):
        collector.receive(report(f"n{i}", 20 * i, at=10))
    started = [
        {
            "key": "console-1",
            "source": "console",
            "title": "http://origin/b.bin",
            "sha1": "",
            "state": "failed",
            "message": "no live node",
            "updated": 5.0,
            "outcomes": [],
        }
    ]
    snap = snapshot(
        registry=registry,
        tracker=commands.tracker,
        collector=collector,
        drains=commands.drains,
        started=started,
        history=History().columns(NOW),
        hubs=[],
        now=12,
        wall=NOW,
        limits=Limits(nodes=1, rows=3),
    )
    assert snap["fleet"]["more"] == 1
    assert [n["state"] for n in snap["fleet"]["nodes"]] == ["available"]
    assert snap["fleet"]["stats"]["drained"] == 1
    seen, console = snap["pushes"]
    assert seen["title"] == "a.bin"
    assert (seen["total"], seen["done"], len(seen["nodes"]), seen["more_nodes"]) == (5, 0, 3, 2)
    assert console["key"] == "console-1"
    assert console["message"] == "no live node"
