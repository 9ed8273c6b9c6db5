"""The console's sans-IO cores: sessions and CSRF, the throttle, the chart history, drained
nodes, the snapshot with its push jobs (a real JobBook driven by hand). No sockets, no
sleeps: time comes in as numbers."""

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
from smartget.hub.console.views import Limits, completion_curve, lower_bound, snapshot
from smartget.hub.jobs import JobBook, NodeInfo, parse_spec
from smartget.hub.jobs.core import MakeTorrent, StartDownload, VerifyCopy
from smartget.hub.jobs.model import Job
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


def test_history_gives_bytes_by_source_as_what_arrived_this_hour() -> None:
    history = History(span=60, every=5)
    totals = [0, 100, 100, 250, 40, 90]  # 40: the totals went down (a restart)
    for i, total in enumerate(totals):
        history.add(Sample(NOW + i * 5, 0, 0, 0, 0, 0, 0, origin=total, peer_same_zone=2 * total))
    columns = history.columns(NOW + 25)
    assert columns["origin"] == [0, 100, 100, 250, 250, 300]
    assert columns["peer_same_zone"] == [0, 200, 200, 500, 500, 600]
    assert columns["peer_other_zone"] == [0] * 6
    later = history.columns(NOW + 25 + 50)  # the first samples left the hour
    assert later["origin"] == [0, 0, 50]


def test_sample_counts_fresh_unfinished_reports() -> None:
    reports = [
        report("a", 50, at=100, uprate=10, downrate=100),
        report("b", 100, at=100, uprate=999, downrate=999),  # done: its last word
        report("c", 20, at=50, uprate=999, downrate=999),  # stale
    ]
    sample = sample_of(
        reports,
        {"swarms": 2, "peers": 5},
        {"nodes": 3},
        at=NOW,
        now=101,
        job_bytes={"origin": 7, "peer_same_zone": 8, "peer_other_zone": 9},
    )
    assert (sample.up, sample.down, sample.swarms, sample.peers) == (10, 100, 2, 5)
    assert (sample.origin, sample.peer_same_zone, sample.peer_other_zone) == (7, 8, 9)


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


MB = 1_000_000
SHA1 = "ab" * 20
DIGEST = "cd" * 32


def job_fleet() -> list[NodeInfo]:
    return [
        NodeInfo(i, f"10.0.0.{i}", "z1" if i % 2 else "z2", 10 - i, f"http://10.0.0.{i}:1", "")
        for i in range(1, 4)
    ]


def running_job(book: JobBook, job_id: str, *, cap: int = 0) -> list[StartDownload]:
    """A job of one 60 MB file to three nodes, its torrent made 2 s in, downloads sent."""
    spec = parse_spec(striped=False, urls=["http://origin/videos/a.ts"], nodes=3, upload_limit=cap)
    book.submit(spec, job_id, NOW)
    (make,) = [c for c in book.poll(NOW, job_fleet) if isinstance(c, MakeTorrent)]
    book.made(job_id, 0, NOW + 2, sha1=SHA1, filesize=60 * MB, torrent_url="http://s/a.torrent")
    commands = book.poll(NOW + 2, job_fleet)
    for v in (c for c in commands if isinstance(c, VerifyCopy)):
        book.verified(job_id, v.node.nodeid, 0, NOW + 2, sha256=DIGEST)
    starts = [c for c in commands if isinstance(c, StartDownload)]
    for s in starts:
        book.started(job_id, s.node.nodeid, 0, "Initial startup", NOW + 2.5)
    assert make.node.nodeid == "z1_10.0.0.1"  # most free capacity: the seed
    return starts


def job_report(nodeid: str, percent: float, at: float, **extra: float) -> Report:
    return Report(
        nodeid=nodeid,
        nodeip=nodeid.split("_")[1],
        nodezone=nodeid.split("_")[0],
        sha1=SHA1,
        status="downloading",
        percent=percent,
        received_at=at,
        **extra,  # type: ignore[arg-type]
    )


def job_snapshot(book: JobBook, collector: Collector, wall: float, **limits: int) -> dict:  # type: ignore[type-arg]
    registry, commands = fleet()
    return snapshot(
        registry=registry,
        tracker=commands.tracker,
        collector=collector,
        drains=commands.drains,
        jobs=book,
        history=History().columns(wall),
        hubs=[],
        now=100.0,
        wall=wall,
        limits=Limits(**limits),
    )


def test_a_running_job_shows_bars_rates_time_left_and_its_bound() -> None:
    book = JobBook()
    starts = running_job(book, "j1", cap=10 * MB)
    a, b = (s.node.nodeid for s in starts)
    collector = Collector()
    collector.receive(job_report(a, 40.0, at=99, downrate=5 * MB, uprate=MB, timeleft=7))
    collector.receive(job_report(b, 25.0, at=60, downrate=9 * MB))  # stale: no rate from it
    book.progress("j1", b, 0, NOW + 3, percent=25.0, status="downloading")  # as the runner does
    snap = job_snapshot(book, collector, NOW + 6)
    (job,) = snap["jobs"]
    assert (job["id"], job["state"], job["title"], job["size"]) == (
        "j1",
        "running",
        "a.ts",
        60 * MB,
    )
    rows = {r["nodeid"]: r for r in job["nodes"]}
    seed = rows["z1_10.0.0.1"]
    assert (seed["role"], seed["percent"], seed["state"], seed["outcome"]) == (
        "seed",
        100.0,
        "done",
        "done",
    )
    assert seed["bytes"] == {"origin": 60 * MB, "peer_same_zone": 0, "peer_other_zone": 0}
    assert (rows[a]["percent"], rows[a]["down"], rows[a]["up"], rows[a]["timeleft"]) == (
        40.0,
        5 * MB,
        MB,
        7,
    )
    assert rows[a]["outcome"] == "downloading"
    # A stale report still moves the bar (the book was fed it), but gives no rate.
    assert (rows[b]["percent"], rows[b]["down"], rows[b]["timeleft"]) == (25.0, 0, None)
    assert (job["done"], job["total"], job["down"], job["timeleft"]) == (1, 3, 5 * MB, 7)
    assert (job["elapsed"], job["cancellable"]) == (6.0, True)
    # The torrent was made 2 s in; 60 MB through a 10 MB/s seed: 6 s more at best.
    assert job["bound"] == {"seed": 2.0, "all": 8.0, "nodes": 3, "striped": False}
    assert job["curve"] == [[2.0, 1]]
    assert snap["job_stats"] == {
        "running": 1,
        "queued": 0,
        "bytes": {"origin": 60 * MB, "peer_same_zone": 0, "peer_other_zone": 0},
    }


def test_a_job_ends_with_outcomes_reasons_and_bytes_by_source() -> None:
    book = JobBook(retry_after=1.0)
    starts = running_job(book, "j1")
    a, b = (s.node.nodeid for s in starts)
    book.progress("j1", a, 0, NOW + 5, percent=100.0, status="seeding")
    book.progress("j1", b, 0, NOW + 3, percent=10.0, status="failed")
    commands = book.poll(NOW + 5.5, job_fleet)  # b is tried again; a is checked
    assert [type(c) for c in commands] == [VerifyCopy, StartDownload]
    book.start_failed("j1", b, 0, "disk full", NOW + 5.6)
    for v in (c for c in commands if isinstance(c, VerifyCopy)):
        split = {"origin": 10 * MB, "peer_same_zone": 50 * MB, "peer_other_zone": 0}
        book.verified("j1", v.node.nodeid, 0, NOW + 7, sha256=DIGEST, sources=split)
    book.poll(NOW + 8, job_fleet)
    (job,) = job_snapshot(book, Collector(), NOW + 60)["jobs"]
    assert job["state"] == "partial"
    assert job["reason"].startswith("1 of 3 node(s) failed: ")
    rows = {r["nodeid"]: r for r in job["nodes"]}
    assert (rows[a]["outcome"], rows[a]["percent"], rows[a]["timeleft"]) == ("done", 100.0, None)
    assert rows[b]["outcome"] == "failed"
    assert rows[b]["reason"] == (
        "failed 2 times: the node reported failed at 10.0%; download refused: disk full"
    )
    assert job["bytes"] == {"origin": 70 * MB, "peer_same_zone": 50 * MB, "peer_other_zone": 0}
    assert job["curve"] == [[2.0, 1], [5.0, 2]]  # the seed when made, a when complete
    assert job["bound"] is None  # no upload cap: no bound
    assert (job["elapsed"], job["cancellable"]) == (8.0, False)


def test_jobs_running_first_then_the_latest_ended_and_the_rest_as_one_line() -> None:
    book = JobBook(max_running=1)
    running_job(book, "first")
    book.cancel("first", NOW + 3)
    running_job(book, "second")
    book.submit(parse_spec(urls=["http://o/x", "http://o/y", "http://o/z"]), "third", NOW + 4)
    book.poll(NOW + 4, job_fleet)  # "second" holds the one running slot: "third" waits
    snap = job_snapshot(book, Collector(), NOW + 5, jobs=2, detailed=1)
    first, second = snap["jobs"]
    assert [first["id"], second["id"]] == ["second", "third"]
    assert snap["more_jobs"] == 1
    assert (first["detailed"], second["detailed"]) == (True, False)
    assert ("nodes" in first, "nodes" in second) == (True, False)
    assert (second["state"], second["title"]) == ("queued", "x and 2 more files")
    assert snap["job_stats"]["queued"] == 1


def test_lower_bound_and_curve_from_what_the_job_knows() -> None:
    book = JobBook()
    running_job(book, "j", cap=10 * MB)
    job = book.get("j")
    assert lower_bound(job) == {"seed": 2.0, "all": 8.0, "nodes": 3, "striped": False}
    # Striped: made 2 s in, each node still needs 2/3 of 60 MB from three 10 MB/s uplinks.
    striped = Job.from_dict(job.to_dict())
    striped.files[0].striped = True
    striped.nodes[0].copies[0].started_at = (striped.started_at or 0) + 2
    assert lower_bound(striped) == {"seed": 2.0, "all": 6.0, "nodes": 3, "striped": True}
    job.spec = parse_spec(urls=["http://origin/videos/a.ts"], nodes=3)
    assert lower_bound(job) is None
    for i, node in enumerate(job.nodes):
        node.copies[0].done_at = float(10 - i)
    assert completion_curve(job, points=200) == [[8.0, 1], [9.0, 2], [10.0, 3]]
    assert completion_curve(job, points=2) == [[8.0, 1], [10.0, 3]]


def test_snapshot_caps_the_fleet_and_counts_drains() -> None:
    registry, commands = fleet()
    commands.drain(2, 1)
    snap = snapshot(
        registry=registry,
        tracker=commands.tracker,
        collector=Collector(),
        drains=commands.drains,
        jobs=JobBook(),
        history=History().columns(NOW),
        hubs=[],
        now=12,
        wall=NOW,
        limits=Limits(nodes=1, rows=3),
    )
    assert snap["fleet"]["more"] == 1
    assert [n["state"] for n in snap["fleet"]["nodes"]] == ["available"]
    assert snap["fleet"]["stats"]["drained"] == 1
    assert (snap["jobs"], snap["more_jobs"]) == ([], 0)
