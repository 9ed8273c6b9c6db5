"""The jobs core (hub/jobs/core.py): commands out, answers in, `now` given. No I/O."""

from __future__ import annotations

import pytest

from smartget.errors import JobError
from smartget.hub.jobs import JobBook, JobState, NodeInfo, parse_spec
from smartget.hub.jobs.core import (
    PING_FAILURES,
    FetchStripes,
    MakeTorrent,
    PingNode,
    StartDownload,
    StopDownload,
    VerifyCopy,
)
from smartget.hub.jobs.model import Job

SHA1 = "ab" * 20
DIGEST = "cd" * 32


def fleet(n: int = 3) -> list[NodeInfo]:
    return [
        NodeInfo(i, f"10.0.0.{i}", "z1" if i % 2 else "z2", 10 - i, f"http://10.0.0.{i}:8090", "")
        for i in range(1, n + 1)
    ]


def run_to_downloads(book: JobBook, job_id: str, now: float = 0.0) -> list[StartDownload]:
    cmds = book.poll(now, fleet)
    makes = [c for c in cmds if isinstance(c, MakeTorrent)]
    for m in makes:
        book.made(
            job_id, m.file, now, sha1=f"{m.file:02x}" * 20, filesize=100, torrent_url=f"u{m.file}"
        )
    cmds = book.poll(now, fleet)
    verifies = [c for c in cmds if isinstance(c, VerifyCopy)]
    for v in verifies:  # the seed's copies: the reference
        book.verified(job_id, v.node.nodeid, v.file, now, sha256=DIGEST)
    return [c for c in cmds if isinstance(c, StartDownload)]


def test_a_job_runs_to_done_with_every_copy_verified() -> None:
    book = JobBook(max_running=1)
    spec = parse_spec(striped=False, urls=["http://o/a", "http://o/b"], nodes=3)
    job = book.submit(spec, "j1", 0.0)
    assert job.state is JobState.QUEUED
    starts = run_to_downloads(book, "j1")
    assert job.state is JobState.RUNNING
    assert len(starts) == 4  # 2 peers x 2 files
    for s in starts:
        book.started("j1", s.node.nodeid, s.file, "Initial startup", 1.0)
        book.progress("j1", s.node.nodeid, s.file, 2.0, percent=100.0, status="seeding")
    verifies = [c for c in book.poll(3.0, fleet) if isinstance(c, VerifyCopy)]
    assert len(verifies) == 4
    for v in verifies:
        book.verified("j1", v.node.nodeid, v.file, 4.0, sha256=DIGEST, sources={"origin": 1})
    book.poll(5.0, fleet)
    assert job.state is JobState.DONE
    assert job.makespan == 2.0
    assert book.statistics()["outcomes"] == {"done": 1}
    assert [e.kind for e in book.events["j1"]][:2] == ["queued", "started"]


def test_a_copy_that_fails_twice_is_given_up_with_its_reasons() -> None:
    book = JobBook(retry_after=1.0)
    book.submit(parse_spec(striped=False, urls=["http://o/a"], nodes=2), "j", 0.0)
    (start,) = run_to_downloads(book, "j")
    nodeid = start.node.nodeid
    book.start_failed("j", nodeid, 0, "disk full", 0.5)
    assert book.poll(0.9, fleet) == []  # waits for its retry time
    (_again,) = [c for c in book.poll(1.6, fleet) if isinstance(c, StartDownload)]
    book.started("j", nodeid, 0, "", 1.7)
    book.progress("j", nodeid, 0, 2.0, percent=10.0, status="failed")
    book.poll(3.0, fleet)
    job = book.get("j")
    assert job.state is JobState.PARTIAL
    node = job.node(nodeid)
    assert node is not None
    assert node.state == "failed"
    assert "failed 2 times" in node.reason
    assert "reported failed" in node.reason
    assert node.copies[0].history[0] == "download refused: disk full"


def test_a_silent_node_is_given_up_after_failed_pings() -> None:
    book = JobBook()
    book.submit(parse_spec(striped=False, urls=["http://o/a"], nodes=2, attempts=1), "j", 0.0)
    (start,) = run_to_downloads(book, "j")
    book.started("j", start.node.nodeid, 0, "", 0.0)
    book.pinged(start.node.nodeid, False, 0.0)  # the ping sent with the download
    now = 2.0
    for _ in range(PING_FAILURES - 1):
        pings = [c for c in book.poll(now, fleet) if isinstance(c, PingNode)]
        assert [p.node.nodeid for p in pings] == [start.node.nodeid]
        book.pinged(start.node.nodeid, False, now)
        now += 2.0
    book.poll(now, fleet)
    job = book.get("j")
    assert job.state is JobState.PARTIAL
    assert "stopped answering" in job.nodes[1].reason


def test_cancel_stops_what_runs_and_restore_resends_what_was_in_flight() -> None:
    book = JobBook()
    book.submit(parse_spec(striped=False, urls=["http://o/a"], nodes=3), "j", 0.0)
    starts = run_to_downloads(book, "j")
    book.started("j", starts[0].node.nodeid, 0, "", 0.1)
    # A hub restarted now sends both downloads again (the nodes answer "already").
    saved = Job.from_dict(book.get("j").to_dict())
    other = JobBook()
    other.restore([saved], {})
    again = [c for c in other.poll(1.0, fleet) if isinstance(c, StartDownload)]
    assert sorted(c.node.nodeid for c in again) == sorted(s.node.nodeid for s in starts)
    assert all(c.file == 0 for c in again)
    book.cancel("j", 1.0)
    stops = [c for c in book.poll(1.0, fleet) if isinstance(c, StopDownload)]
    assert sorted(s.node.nodeid for s in stops) == sorted(s.node.nodeid for s in starts)
    assert book.get("j").state is JobState.CANCELLED


def test_priority_and_max_running() -> None:
    book = JobBook(max_running=1)
    book.submit(parse_spec(urls=["http://o/low"], nodes=1), "low", 0.0)
    book.submit(parse_spec(urls=["http://o/high"], nodes=1, priority=5), "high", 0.0)
    book.poll(0.0, fleet)
    assert book.get("high").state is JobState.RUNNING
    assert book.get("low").state is JobState.QUEUED


def test_a_node_takes_part_in_at_most_node_max_jobs() -> None:
    book = JobBook(max_running=5, node_max_jobs=1)
    book.submit(parse_spec(urls=["http://o/a"], node_ids=[1]), "a", 0.0)
    book.submit(parse_spec(urls=["http://o/b"], node_ids=[1]), "b", 0.0)
    book.poll(0.0, fleet)
    assert book.get("a").state is JobState.RUNNING
    assert book.get("b").state is JobState.QUEUED


def test_deadline_gives_up_and_stops() -> None:
    book = JobBook()
    book.submit(parse_spec(striped=False, urls=["http://o/a"], nodes=2, deadline=10), "j", 0.0)
    (start,) = run_to_downloads(book, "j")
    book.started("j", start.node.nodeid, 0, "", 0.0)
    book.progress("j", start.node.nodeid, 0, 5.0, percent=40.0, status="downloading")
    stops = [c for c in book.poll(10.0, fleet) if isinstance(c, StopDownload)]
    assert [s.node.nodeid for s in stops] == [start.node.nodeid]
    job = book.get("j")
    assert job.state is JobState.PARTIAL
    assert job.nodes[1].reason.startswith("deadline: at 40.0%")


def test_no_nodes_fails_at_once_and_bad_requests_are_refused() -> None:
    book = JobBook()
    book.submit(parse_spec(urls=["http://o/a"], zones=["nowhere"]), "j", 0.0)
    book.poll(0.0, fleet)
    assert book.get("j").state is JobState.FAILED
    assert "zone(s) nowhere" in book.get("j").reason
    for bad in ({}, {"urls": ["ftp://x"]}, {"urls": ["http://a", "http://a"]}):
        with pytest.raises(JobError):
            parse_spec(**bad)  # type: ignore[arg-type]


def test_jobs_and_events_are_bounded() -> None:
    book = JobBook(max_jobs=2, max_events=10)
    for i in range(4):
        book.submit(parse_spec(urls=["http://o/a"], zones=["none"]), f"j{i}", float(i))
        book.poll(float(i), fleet)  # fails at once: no node
    assert len(book.jobs) <= 2
    _, forgotten = book.drain_dirty()
    assert forgotten
    assert all(len(e) <= 10 for e in book.events.values())


# -- pipelined files: the origin's torrent, each node fetches its stripe while trading ----


def test_a_pipelined_file_is_made_from_the_origins_torrent_and_each_node_fetches_a_stripe() -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a?v=1"], nodes=3), "j", 0.0)
    make, *starts = [c for c in book.poll(0.0, fleet) if not isinstance(c, PingNode)]
    assert isinstance(make, MakeTorrent)
    assert make.node.nodeid == job.nodes[0].nodeid
    assert (make.origin_torrent, make.fetch, make.pieces) == ("http://o/a.torrent?v=1", (0, 3), "")
    assert job.files[0].pipelined
    assert job.files[0].striped
    # The other nodes make the same torrent from the origin's at once, not after the seed.
    assert [(s.node.nodeid, s.fetch, s.origin_torrent, s.url, s.sha1) for s in starts] == [
        (job.nodes[1].nodeid, (1, 3), "http://o/a.torrent?v=1", "http://o/a?v=1", ""),
        (job.nodes[2].nodeid, (2, 3), "http://o/a.torrent?v=1", "http://o/a?v=1", ""),
    ]
    assert all(isinstance(s, StartDownload) for s in starts)
    book.started("j", job.nodes[1].nodeid, 0, "", 0.9, sha1=SHA1)  # before the seed's answer
    book.made("j", 0, 1.0, sha1=SHA1, filesize=1000, torrent_url="u0")
    assert job.nodes[0].copies[0].state.value == "downloading"
    (made,) = [e for e in book.events["j"] if e.kind == "made"]
    assert "made from the origin's" in made.text
    assert not [c for c in book.poll(1.0, fleet) if isinstance(c, StartDownload)]
    book.started("j", job.nodes[2].nodeid, 0, "", 1.1, sha1=SHA1)  # after it
    assert [n.copies[0].state.value for n in job.nodes] == ["downloading"] * 3
    assert [n.copies[0].attempts for n in job.nodes] == [1, 1, 1]
    for node in job.nodes:
        book.progress("j", node.nodeid, 0, 2.0, percent=100.0, status="seeding")
    (first,) = [c for c in book.poll(2.0, fleet) if isinstance(c, VerifyCopy)]
    assert not book.settles_file("j", first.node.nodeid, 0)
    book.verified("j", first.node.nodeid, 0, 2.1, sha256=DIGEST, sources={"origin": 334})
    others = [c for c in book.poll(2.1, fleet) if isinstance(c, VerifyCopy)]
    book.verified("j", others[0].node.nodeid, 0, 2.2, sha256=DIGEST, sources={"origin": 333})
    assert book.settles_file("j", others[1].node.nodeid, 0)  # the last one
    book.set_origin_bytes("j", 0, 1010)
    book.verified("j", others[1].node.nodeid, 0, 2.2, sha256=DIGEST, sources={"origin": 333})
    book.poll(2.3, fleet)
    assert job.state is JobState.DONE
    assert job.files[0].origin_bytes == 1010
    # the stripe's bytes are the node's own count (nothing added by the hub)
    assert sorted(n.copies[0].bytes["origin"] for n in job.nodes) == [333, 333, 334]


def test_without_a_torrent_at_the_origin_the_stripes_are_fetched_first() -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=2), "j", 0.0)
    book.poll(0.0, fleet)
    restored = JobBook()  # a hub killed while the seed made it asks again
    restored.restore([Job.from_dict(job.to_dict())], {})
    again = [c for c in restored.poll(1.0, fleet) if not isinstance(c, PingNode)]
    assert [type(c) for c in again] == [MakeTorrent, StartDownload]
    assert all(c.origin_torrent for c in again)  # type: ignore[union-attr]
    book.start_failed("j", job.nodes[1].nodeid, 0, "HTTP 404", 1.0)  # its early start
    book.make_failed("j", 0, "GET http://o/a.torrent answered HTTP 404", 1.0)
    assert not job.files[0].pipelined
    assert job.files[0].striped
    (event,) = [e for e in book.events["j"] if e.kind == "unpipelined"]
    assert "HTTP 404" in event.text
    assert "stripe first" in event.text
    assert [type(c) for c in book.poll(1.0, fleet)] == [FetchStripes]
    assert job.files[0].attempts == 0  # not a failed attempt at making it
    assert [n.copies[0].attempts for n in job.nodes] == [0, 0]  # nor at starting a copy
    assert [n.copies[0].state.value for n in job.nodes] == ["pending"] * 2


def test_a_copy_started_early_is_started_again_when_the_seeds_make_fails_first() -> None:
    """The seed's answer (no torrent at the origin) before the node's: the early copy
    waits for the stripes, with no attempt spent and nothing to stop."""
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=2), "j", 0.0)
    book.poll(0.0, fleet)
    book.make_failed("j", 0, "HTTP 404", 1.0)
    book.start_failed("j", job.nodes[1].nodeid, 0, "HTTP 404", 1.1)  # too late: ignored
    copy = job.nodes[1].copies[0]
    assert (copy.state.value, copy.attempts, copy.history) == ("pending", 0, [])
    assert not job.stops


def test_a_copy_started_early_whose_torrent_is_not_the_seeds_fails_and_is_stopped() -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=3), "j", 0.0)
    book.poll(0.0, fleet)
    other = "b" * 40
    book.started("j", job.nodes[1].nodeid, 0, "", 0.5, sha1=other)  # before the seed's
    book.made("j", 0, 1.0, sha1=SHA1, filesize=1000, torrent_url="u0")
    book.started("j", job.nodes[2].nodeid, 0, "", 1.5, sha1=other)  # after it
    for node in job.nodes[1:]:
        copy = node.copies[0]
        assert copy.state.value == "pending"  # tried again the usual way
        assert f"the torrent it made from the origin's is {other}, the seed's {SHA1}" in (
            copy.reason
        )
    assert sorted(job.stops) == sorted((n.nodeid, other) for n in job.nodes[1:])
    starts = [c for c in book.poll(10.0, fleet) if isinstance(c, StartDownload)]
    assert [(s.torrent_url, s.sha1, s.origin_torrent) for s in starts] == [("u0", SHA1, "")] * 2


@pytest.mark.parametrize("answer", ["", "x" * 100_000, "\u00b2" * 40, SHA1 + "0"])
def test_a_node_answering_an_early_start_with_no_sha1_is_started_the_usual_way(
    answer: str,
) -> None:
    """A fleet node's answer is kept only as an info-hash: anything else (empty, huge,
    not hex) ends its early start like a refusal, shown in a bounded event."""
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=2), "j", 0.0)
    book.poll(0.0, fleet)
    book.started("j", job.nodes[1].nodeid, 0, "", 0.5, sha1=answer)
    copy = job.nodes[1].copies[0]
    assert (copy.state.value, copy.attempts) == ("pending", 0)
    (event,) = [e for e in book.events["j"] if e.kind == "early-start-failed"]
    assert "its answer is no torrent" in event.text
    assert len(event.text) < 400
    assert not book._early
    assert not job.stops


def test_a_copy_that_could_not_start_early_starts_once_the_torrent_is_made() -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=2), "j", 0.0)
    book.poll(0.0, fleet)
    book.start_failed("j", job.nodes[1].nodeid, 0, "no space left on device", 0.5)
    (event,) = [e for e in book.events["j"] if e.kind == "early-start-failed"]
    assert "no space left on device" in event.text
    assert job.nodes[1].copies[0].attempts == 0
    assert not [c for c in book.poll(0.6, fleet) if isinstance(c, StartDownload)]
    book.made("j", 0, 1.0, sha1=SHA1, filesize=1000, torrent_url="u0")
    (start,) = [c for c in book.poll(1.0, fleet) if isinstance(c, StartDownload)]
    assert (start.node.nodeid, start.torrent_url, start.origin_torrent) == (
        job.nodes[1].nodeid,
        "u0",
        "",
    )
    assert job.nodes[1].copies[0].attempts == 1


# -- striped files: every node fetches its stripe, the seed makes the torrent from them ----


def no_origin_torrent(book: JobBook, job_id: str, now: float) -> None:
    """Poll until the pipelined maketorrent goes out; answer that the origin has none."""
    (make,) = [c for c in book.poll(now, fleet) if isinstance(c, MakeTorrent)]
    assert make.origin_torrent
    book.make_failed(job_id, make.file, "HTTP 404", now)


def stripes_in(
    book: JobBook, job_id: str, now: float, *, pieces: int = 10, size: int = 1000
) -> FetchStripes:
    """Poll until the stripes go out; answer each node with its share of ``pieces``."""
    no_origin_torrent(book, job_id, now)
    (fetch,) = [c for c in book.poll(now, fleet) if isinstance(c, FetchStripes)]
    count = len(fetch.nodes)
    for i, node in enumerate(fetch.nodes):
        first, end = i * pieces // count, (i + 1) * pieces // count
        book.prefetched(
            job_id,
            node.nodeid,
            fetch.file,
            now,
            first=first,
            end=end,
            pieces="".join(f"{p:040x}" for p in range(first, end)),
            stripe_bytes=(end - first) * (size // pieces),
            filesize=size,
            piece_length=size // pieces,
            validators="ETag 'x'",
        )
    return fetch


def test_a_striped_file_is_made_from_every_stripe_and_each_node_starts_with_its_own() -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=3), "j", 0.0)
    fetch = stripes_in(book, "j", 0.0)
    assert [n.nodeid for n in fetch.nodes] == [n.nodeid for n in job.nodes]
    (make,) = [c for c in book.poll(1.0, fleet) if isinstance(c, MakeTorrent)]
    assert make.node.nodeid == job.nodes[0].nodeid
    assert make.pieces == "".join(f"{p:040x}" for p in range(10))
    assert (make.piece_length, make.filesize, make.have) == (100, 1000, (0, 3))
    book.made("j", 0, 2.0, sha1=SHA1, filesize=1000, torrent_url="u0")
    seed = job.nodes[0].copies[0]
    assert seed.state.value == "downloading"  # the seed downloads the rest too
    assert job.files[0].pieces == ""  # not kept once the torrent is made
    starts = [c for c in book.poll(2.0, fleet) if isinstance(c, StartDownload)]
    assert sorted(s.have for s in starts if s.have) == [(3, 6), (6, 10)]
    for node in job.nodes:
        book.progress("j", node.nodeid, 0, 3.0, percent=100.0, status="seeding")
    verifies = [c for c in book.poll(3.0, fleet) if isinstance(c, VerifyCopy)]
    assert [v.node.nodeid for v in verifies] == [job.nodes[0].nodeid]  # the reference first
    book.verified("j", verifies[0].node.nodeid, 0, 3.5, sha256=DIGEST, sources={"origin": 7})
    for v in [c for c in book.poll(3.5, fleet) if isinstance(c, VerifyCopy)]:
        book.verified("j", v.node.nodeid, 0, 4.0, sha256=DIGEST, sources={"peer_same_zone": 5})
    book.poll(4.0, fleet)
    assert job.state is JobState.DONE
    assert job.makespan == 3.0
    # a stripe's bytes came from the origin, whatever libtorrent counted
    assert [n.copies[0].bytes["origin"] for n in job.nodes] == [300 + 7, 300, 400]


@pytest.mark.parametrize(
    "spoil",
    ["fail", "size", "validators", "gap", "timeout"],
)
def test_striping_that_goes_wrong_falls_back_to_the_seed_fetching_the_whole_file(
    spoil: str,
) -> None:
    book = JobBook()
    job = book.submit(parse_spec(urls=["http://o/a"], nodes=3, deadline=86400), "j", 0.0)
    no_origin_torrent(book, "j", 0.0)
    (fetch,) = [c for c in book.poll(0.0, fleet) if isinstance(c, FetchStripes)]
    a, b, c = fetch.nodes
    answer = {
        "first": 0,
        "end": 5,
        "pieces": "00" * 100,
        "stripe_bytes": 500,
        "filesize": 1000,
        "piece_length": 100,
        "validators": "v",
    }
    book.prefetched("j", a.nodeid, 0, 0.1, **answer)
    now = 0.2
    if spoil == "fail":
        book.stripe_failed("j", b.nodeid, 0, "the origin does not serve byte ranges", now)
    elif spoil == "timeout":
        now = fetch.deadline
    else:
        other = {**answer, "first": 5, "end": 10}
        if spoil == "size":
            other["filesize"] = 1001
        elif spoil == "validators":
            other["validators"] = "changed"
        book.prefetched("j", b.nodeid, 0, now, **other)
        last = {**answer, "first": 10, "end": 10, "pieces": "", "stripe_bytes": 0}
        if spoil == "gap":  # overlaps the first stripe
            last = {**answer, "first": 4, "end": 6, "pieces": "00" * 40}
        book.prefetched("j", c.nodeid, 0, now, **last)
    if spoil == "timeout":  # given up at this poll, made whole at the next
        assert not [cmd for cmd in book.poll(now, fleet) if isinstance(cmd, MakeTorrent)]
    (make,) = [cmd for cmd in book.poll(now, fleet) if isinstance(cmd, MakeTorrent)]
    assert (make.pieces, make.have) == ("", None)  # a whole-file maketorrent
    assert not job.files[0].striped
    (unstriped,) = [e for e in book.events["j"] if e.kind == "unstriped"]
    assert "the seed fetches the whole file" in unstriped.text
    book.made("j", 0, now, sha1=SHA1, filesize=1000, torrent_url="u0")
    assert job.nodes[0].copies[0].state.value == "complete"  # the classic seed
    starts = [cmd for cmd in book.poll(now, fleet) if isinstance(cmd, StartDownload)]
    assert [s.have for s in starts] == [None, None]


def test_a_restored_job_fetches_its_stripes_again_and_one_node_is_never_striped() -> None:
    book = JobBook()
    book.submit(parse_spec(urls=["http://o/a"], nodes=3), "j", 0.0)
    no_origin_torrent(book, "j", 0.0)
    book.poll(0.0, fleet)
    saved = Job.from_dict(book.get("j").to_dict())
    assert saved.files[0].state.value == "striping"
    other = JobBook()
    other.restore([saved], {})
    assert [c for c in other.poll(1.0, fleet) if isinstance(c, FetchStripes)]
    single = JobBook()
    single.submit(parse_spec(urls=["http://o/a"], nodes=1), "s", 0.0)
    assert [type(c) for c in single.poll(0.0, fleet)] == [MakeTorrent]


def test_byte_sources_overlapping_peer_counters_are_scaled_but_the_origin_is_kept() -> None:
    from smartget.hub.jobs.runner import classify_sources

    zones = {"10.0.0.2": "a", "10.0.0.3": "b"}
    sources = {"web": 300, "peers": {"10.0.0.2": 700, "10.0.0.3": 700}}
    out = classify_sources("a", sources, zones.get, 1000)
    assert out == {"origin": 300, "peer_same_zone": 350, "peer_other_zone": 350}
    exact = classify_sources("a", {"web": 0, "peers": {"10.0.0.3": 1000}}, zones.get, 1000)
    assert exact == {"origin": 0, "peer_same_zone": 0, "peer_other_zone": 1000}


def test_the_origins_torrent_is_the_files_path_with_torrent_added() -> None:
    from smartget.hub.jobs.core import torrent_url_of

    assert torrent_url_of("http://o:8/d/f.bin") == "http://o:8/d/f.bin.torrent"
    assert torrent_url_of("https://o/f?x=1#frag") == "https://o/f.torrent?x=1"
