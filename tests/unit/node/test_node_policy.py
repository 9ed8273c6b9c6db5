"""The engine's sans-IO swarm policy (node/policy.py) and the node's pure modules."""

from __future__ import annotations

import subprocess
import sys

from smartget.node.policy import (
    Completion,
    Striping,
    TickSchedule,
    WebSeedHolds,
    own_stripe,
    stripe_only,
)
from smartget.node.status import DOWNLOAD_SUCCESS, DOWNLOADING, INITIAL, SEEDING, status_label

PURE = (
    "smartget.node.tasks",
    "smartget.node.paths",
    "smartget.node.status",
    "smartget.node.policy",
    "smartget.node.report",
    "smartget.node.settings",
)


def test_pure_modules_load_no_libtorrent_and_no_io() -> None:
    code = (
        f"import sys\nimport {', '.join(PURE)}\n"
        "print(sorted({'libtorrent', 'asyncio', 'httpx', 'sqlite3', 'ssl'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_complete_only_after_finished_then_flushed() -> None:
    done = Completion()
    assert not done.flushed("a")  # a flush nobody asked for
    assert done.finished("a")  # ask for a flush
    assert not done.finished("a")  # once
    assert "a" not in done
    assert done.flushed("a")
    assert "a" in done
    assert not done.finished("a")  # complete: nothing more to flush
    done.seeded("b")
    assert "b" in done
    done.forget("a")
    assert "a" not in done


def test_web_seeds_come_back_after_a_stall_only() -> None:
    holds = WebSeedHolds(fallback=10.0)
    assert holds.hold("a", ["http://o/x", "http://o/x"], now=0.0) == ["http://o/x"]
    assert holds.check("a", done=100, now=5.0) is None  # peers help
    assert holds.check("a", done=100, now=14.0) is None  # 9 s without progress
    fallback = holds.check("a", done=100, now=15.0)
    assert fallback is not None
    assert (fallback.urls, fallback.idle) == (["http://o/x"], 10.0)
    assert "a" not in holds
    assert WebSeedHolds(fallback=0).hold("b", ["http://o/y"], now=0.0) == []
    assert holds.hold("c", [], now=0.0) == []


def test_a_striped_download_falls_back_for_its_stripe_first_then_whole() -> None:
    holds = WebSeedHolds(fallback=10.0)
    holds.hold("a", ["http://o/x"], now=0.0)
    first = holds.check("a", done=300, now=0.0, can_stripe=True)
    assert first is None
    first = holds.check("a", done=300, now=10.0, can_stripe=True)
    assert first is not None
    assert first.striped
    assert holds.striping("a")
    assert "a" in holds
    assert holds.held() == []  # not checked while it fetches its stripe
    assert holds.fetching_stripes() == ["a"]
    # Its stripe is here: the web seeds are held again, from now and this progress.
    assert holds.stripe_done("a", done=600, now=20.0) == ["http://o/x"]
    assert not holds.striping("a")
    assert holds.check("a", done=600, now=29.0, can_stripe=True) is None
    second = holds.check("a", done=600, now=30.0, can_stripe=True)
    assert second is not None
    assert not second.striped  # the peers stalled again: the whole file
    assert "a" not in holds
    assert holds.stripe_done("a", done=600, now=31.0) == []


def test_a_lone_download_falls_back_whole_at_once() -> None:
    holds = WebSeedHolds(fallback=10.0)
    holds.hold("a", ["http://o/x"], now=0.0)
    fallback = holds.check("a", done=0, now=10.0, can_stripe=False)
    assert fallback is not None
    assert not fallback.striped
    holds.hold("b", ["http://o/y"], now=0.0)
    assert holds.check("b", done=0, now=10.0, can_stripe=True) is not None
    holds.forget("b")
    assert "b" not in holds


def test_stripe_only_wants_the_own_stripe() -> None:
    striping = Striping()
    key = striping.changed("a", "10.0.0.2", ["10.0.0.1", "10.0.0.3"])
    assert key is not None
    priorities = striping.assign("a", key, "10.0.0.2", 6)
    assert stripe_only(priorities) == [0, 5, 0, 0, 5, 0]
    assert own_stripe(priorities) == [1, 4]
    assert striping.members("a") == 3
    assert striping.current("a", "10.0.0.2", 6) == priorities
    assert striping.current("b", "10.0.0.2", 6) is None


def test_restripe_only_when_the_downloading_peers_change() -> None:
    striping = Striping()
    key = striping.changed("a", "10.0.0.1", ["10.0.0.2"])
    assert key == ("10.0.0.1", "10.0.0.2")
    assert striping.assign("a", key, "10.0.0.1", 4) == [5, 4, 5, 4]
    assert striping.changed("a", "10.0.0.1", ["10.0.0.2"]) is None
    alone = striping.changed("a", "10.0.0.1", [])
    assert alone is not None
    assert striping.assign("a", alone, "10.0.0.1", 3) == [4, 4, 4]  # nothing to split
    assert striping.restripes == 2


def test_ticks_check_young_downloads_often_and_save_resume_on_time() -> None:
    ticks = TickSchedule(resume_interval=2.0, now=0.0)
    first = ticks.tick(0.1)
    assert (first.young_after, first.release_web_seeds, first.save_resume) == (-2.9, False, False)
    second = ticks.tick(1.0)
    assert (second.young_after, second.release_web_seeds, second.save_resume) == (None, True, False)
    assert ticks.tick(2.0).save_resume


def test_status_labels() -> None:
    assert status_label(complete=True, seeding=True, transferring=True) == SEEDING
    assert status_label(complete=True, seeding=False, transferring=True) == DOWNLOAD_SUCCESS
    assert status_label(complete=False, seeding=True, transferring=True) == DOWNLOADING
    assert status_label(complete=False, seeding=False, transferring=False) == INITIAL
