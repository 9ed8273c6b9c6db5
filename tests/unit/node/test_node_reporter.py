"""The report schedule (sans-IO): due times, backoff, the end; success replies; auth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from smartget.errors import ConfigError
from smartget.node.auth import Credentials, md5_hex
from smartget.node.report import MAX_BACKOFF, ReportSchedule, is_success_reply


def test_due_interval_change_and_end() -> None:
    schedule = ReportSchedule(30)
    schedule.track("a", 0)
    assert schedule.due(0) == ["a"]
    schedule.delivered("a", 0, final=False, acknowledged=True)
    assert schedule.due(29) == []
    assert schedule.next_deadline() == 30
    schedule.changed("a", "downloading", 5)
    assert schedule.due(5) == ["a"]  # a state change reports at once
    schedule.delivered("a", 5, final=True, acknowledged=False)
    assert not schedule.entries["a"].done  # unacknowledged: keep reporting
    schedule.delivered("a", 35, final=True, acknowledged=True)
    assert schedule.entries["a"].done
    assert schedule.due(10_000) == []
    assert schedule.next_deadline() is None
    schedule.changed("a", "seeding", 10_001)
    assert schedule.due(10_001) == []


def test_backoff_is_the_seeds() -> None:
    schedule = ReportSchedule(30)
    schedule.track("a", 0)
    now = 0.0
    waits = []
    for _ in range(8):
        schedule.failed("a", now)
        waits.append(schedule.entries["a"].next_due - now)
        now = schedule.entries["a"].next_due
    now -= 100  # in the middle of the last backoff
    assert waits == [30, 120, 270, 480, 750, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    # A state change does not cut a backoff short; a delivery resets it.
    schedule.changed("a", "seeding", now)
    assert schedule.due(now) == []
    schedule.delivered("a", now, final=False, acknowledged=False)
    assert schedule.entries["a"].retries == 0


def test_restored_state() -> None:
    schedule = ReportSchedule(10)
    schedule.track("done", 0, done=True)
    schedule.track("retry", 0, retries=3)
    assert schedule.due(0) == ["retry"]
    with pytest.raises(ValueError, match="positive"):
        ReportSchedule(0)


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b"success", True),
        (b' "success"\n', True),
        (b'{"result": "success"}', True),
        (b'{"result": "sucess"}', True),
        (b'{"result": "failed"}', False),
        (b"", False),
        (b"[1]", False),
        (b"\xff" * 10, False),
    ],
)
def test_success_reply(body: bytes, ok: bool) -> None:
    assert is_success_reply(body) is ok


def test_credentials(tmp_path: Path) -> None:
    creds = Credentials.build(tmp_path, "admin", "admin123456", "tok")
    md5 = hashlib.md5(b"admin123456").hexdigest()
    assert md5_hex("admin123456") == md5
    assert creds.check(user="admin", pwd=md5, bearer=None)
    assert creds.check(user=None, pwd=None, bearer="tok")
    assert not creds.check(user="admin", pwd="admin123456", bearer=None)
    assert not creds.check(user="x", pwd=md5, bearer="nope")
    token_only = Credentials.build(tmp_path, None, None, "tok")
    assert not token_only.check(user="admin", pwd=md5, bearer=None)
    assert not (tmp_path / "node.password").exists()
    generated = Credentials.build(tmp_path, None, None, None)
    password = (tmp_path / "node.password").read_text().strip()
    assert generated.check(user="admin", pwd=md5_hex(password), bearer=None)
    with pytest.raises(ConfigError, match="--password"):
        Credentials.build(tmp_path, "u", None, None)
