"""Download deadlines without I/O: the deadline heap, the state's schema migration and
expiry columns, the report that ends reporting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import StoreError
from smartget.node.report import ReportSchedule, is_final
from smartget.node.state import SCHEMA, SCHEMA_VERSION, NodeState, TorrentRecord
from smartget.node.status import TorrentStatus
from smartget.node.tasks import EXPIRED, Deadlines


def test_deadlines_fire_in_order_once() -> None:
    deadlines = Deadlines()
    assert deadlines.next_deadline() is None
    deadlines.set("b", 20)
    deadlines.set("a", 10)
    deadlines.set("c", 30)
    assert deadlines.next_deadline() == 10
    assert deadlines.due(9.9) == []
    assert deadlines.due(20) == ["a", "b"]
    assert deadlines.due(20) == []
    assert deadlines.next_deadline() == 30
    assert len(deadlines) == 1
    assert "c" in deadlines
    assert "a" not in deadlines


def test_deadlines_replace_and_cancel() -> None:
    deadlines = Deadlines()
    deadlines.set("a", 10)
    deadlines.set("a", 50)  # a later task: the new deadline replaces the old one
    deadlines.set("b", 20)
    deadlines.cancel("b")
    deadlines.cancel("nothing")
    assert deadlines.next_deadline() == 50
    assert deadlines.due(40) == []
    assert deadlines.get("a") == 50
    assert deadlines.due(50) == ["a"]
    assert deadlines.get("a") is None


def test_deadlines_heap_stays_bounded() -> None:
    deadlines = Deadlines()
    for step in range(10_000):
        deadlines.set(f"k{step % 5}", float(step))
        if step % 3 == 0:
            deadlines.cancel(f"k{(step + 1) % 5}")
    assert len(deadlines._heap) <= 2 * len(deadlines) + 17


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "cancel", "due"]),
            st.sampled_from("abcd"),
            st.integers(0, 100),
        ),
        max_size=60,
    )
)
def test_deadlines_match_a_dict(ops: list[tuple[str, str, int]]) -> None:
    deadlines = Deadlines()
    model: dict[str, float] = {}
    for op, key, value in ops:
        if op == "set":
            deadlines.set(key, value)
            model[key] = value
        elif op == "cancel":
            deadlines.cancel(key)
            model.pop(key, None)
        else:
            fired = deadlines.due(value)
            expected = sorted((at, k) for k, at in model.items() if at <= value)
            assert fired == [k for _, k in expected]
            for k in fired:
                del model[k]
        assert deadlines.next_deadline() == (min(model.values()) if model else None)
        assert len(deadlines) == len(model)


def _record(sha1: str = "ab" * 20, **extra: object) -> TorrentRecord:
    return TorrentRecord(
        sha1=sha1, torrentfile="/w/a.torrent", save_path="/w", data_path="/w/a", **extra
    )  # type: ignore[arg-type]


def test_state_migrates_a_version_0_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)  # as the first nodes wrote it, user_version 0
    old.execute(
        "INSERT INTO torrents (sha1, torrentfile, save_path, data_path, report_retries) "
        "VALUES ('aa', '/w/a.torrent', '/w', '/w/a', 2)"
    )
    old.commit()
    old.close()
    state = NodeState(path)
    try:
        (record,) = state.torrents()
        assert record.sha1 == "aa"
        assert record.report_retries == 2
        assert record.expire_at is None
        assert not record.expired
        assert state.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        state.close()
    NodeState(path).close()  # opening again migrates nothing


def test_state_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    NodeState(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer SmartGet"):
        NodeState(path)


def test_state_keeps_deadline_and_expiry(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "node.sqlite3")
    try:
        state.put(_record(expire_at=1_700_000_000.5))
        sha1 = "ab" * 20
        assert state.get(sha1).expire_at == 1_700_000_000.5  # type: ignore[union-attr]
        state.mark_expired(sha1, {"percent": 37.5, "downtotal": 1000, "uptotal": 0})
        record = state.get(sha1)
        assert record is not None
        assert record.expired
        assert record.expired_figures() == {"percent": 37.5, "downtotal": 1000, "uptotal": 0}
        state.set_expire(sha1, None)
        assert state.get(sha1).expire_at is None  # type: ignore[union-attr]
        state.put(_record())  # a new task for the same torrent starts afresh
        assert not state.get(sha1).expired  # type: ignore[union-attr]
    finally:
        state.close()


@pytest.mark.parametrize("raw", ["not json", "[1]", '{"percent": "x", "7": true}'])
def test_unreadable_expired_figures(raw: str) -> None:
    assert _record(expired=raw).expired_figures() == {}


def _status(status: str, percent: float) -> TorrentStatus:
    return TorrentStatus(
        sha1="ab" * 20,
        name="a",
        status=status,
        percent=percent,
        downrate=0,
        uprate=0,
        downtotal=0,
        uptotal=0,
        numpeers=0,
        numseeds=0,
        timeleft=0,
        complete=False,
        error="",
    )


def test_expired_report_is_final() -> None:
    assert is_final(_status(EXPIRED, 12.5))
    assert is_final(_status("seeding", 100.0))
    assert not is_final(_status("downloading", 99.9))
    schedule = ReportSchedule(30)
    schedule.track("a", 0)
    schedule.delivered("a", 0, final=False, acknowledged=True)
    schedule.changed("a", EXPIRED, 5)
    assert schedule.due(5) == ["a"]  # expiry is a state change: reported at once
    schedule.delivered("a", 5, final=True, acknowledged=True)
    assert schedule.next_deadline() is None
