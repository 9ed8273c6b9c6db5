"""Seed 003's task template and response_msg, without any I/O."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.node.tasks import (
    DEFAULT_RETRIES,
    NodeIdentity,
    TaskError,
    parse_task,
    peek_taskid,
    response,
)

NOW = 1_700_000_000.0


def test_seed_example_download_with_typo() -> None:
    body = json.dumps(
        {
            "taskid": "b96c157579c90b199a9ce2b5ce391ee3592942e6",
            "max_retries": "",
            "args": {"torrentfileurl": "http://127.0.0.1:8080/fhs/pub/fhs-2.3.pdf.torrent"},
            "event": "dowload",
            "expire": "",
        }
    ).encode()
    task = parse_task(body, NOW)
    assert task.event == "download"
    assert task.max_retries == DEFAULT_RETRIES
    assert task.expire_at is None
    assert task.arg("torrentfileurl").endswith(".torrent")


def test_filenmae_alias_and_trackers() -> None:
    task = parse_task(
        {"event": "delete", "args": {"filenmae": "/a", "trackers": "http://t/announce"}}, NOW
    )
    assert task.arg("filename") == "/a"
    assert task.args["trackers"] == ["http://t/announce"]


@pytest.mark.parametrize(
    ("expire", "expected"),
    [
        ("", None),
        (None, None),
        (60, NOW + 60),
        ("60", NOW + 60),
        (NOW + 5, NOW + 5),
        ("2023-11-14T22:13:20", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ],
)
def test_expire_forms(expire: object, expected: float | None) -> None:
    assert parse_task({"event": "shutdownall", "expire": expire}, NOW).expire_at == expected


@pytest.mark.parametrize("expire", ["soon", -1, True, float("nan"), [1]])
def test_bad_expire(expire: object) -> None:
    with pytest.raises(TaskError, match="expire"):
        parse_task({"event": "shutdownall", "expire": expire}, NOW)


@pytest.mark.parametrize(("value", "expected"), [("", 3), ("0", 0), (5, 5), ("20", 20)])
def test_max_retries(value: object, expected: int) -> None:
    assert parse_task({"event": "shutdownall", "max_retries": value}, NOW).max_retries == expected


@pytest.mark.parametrize("value", ["-1", "2.5", "\u00b2", "\u0663"])  # superscript, Arabic 3
def test_bad_max_retries(value: str) -> None:
    with pytest.raises(TaskError, match="max_retries must be a whole number"):
        parse_task({"event": "shutdownall", "max_retries": value}, NOW)


def test_route_event() -> None:
    assert parse_task(b'{"args": {}}', NOW, event="download").event == "download"
    with pytest.raises(TaskError, match="sent to the /download route"):
        parse_task(b'{"event": "delete"}', NOW, event="download")


def test_response_has_every_seed_field() -> None:
    node = NodeIdentity(ip="127.0.0.1", zone="beijing")
    body = response(node, "delete", taskid="13241324", args={"x": 1})
    assert body == {
        "taskid": "13241324",
        "nodeid": "beijing_127.0.0.1",
        "nodezone": "beijing",
        "nodeip": "127.0.0.1",
        "event": "delete_response",
        "status": "",
        "result": "success",
        "retries": "0",
        "traceback": "",
        "args": {"x": 1},
    }


def test_peek_taskid() -> None:
    assert peek_taskid(b'{"taskid": "7", "event": 5}') == "7"
    assert peek_taskid(b"garbage") == ""


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_task_error(raw: bytes) -> None:
    with contextlib.suppress(TaskError):
        parse_task(raw, NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["taskid", "event", "expire", "max_retries", "args"]) | st.text(max_size=8),
        json_values,
        max_size=6,
    ),
    st.sampled_from([None, "download", "delete"]),
)
def test_arbitrary_json_raises_only_task_error(data: dict[str, object], event: str | None) -> None:
    try:
        task = parse_task(json.dumps(data), NOW, event=event)
    except TaskError:
        return
    assert task.event in ("maketorrent", "download", "shutdown", "shutdownall", "delete")
