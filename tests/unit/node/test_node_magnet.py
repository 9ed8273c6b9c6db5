"""Magnet URIs and info-hashes of download tasks (node/magnet.py): strict, hostile-safe."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import MagnetError, TaskError
from smartget.node.magnet import (
    MAX_MAGNET,
    MAX_TRACKERS,
    Magnet,
    check_tracker,
    parse_info_hash,
    parse_magnet,
)
from smartget.node.tasks import parse_task

HEX = "0123456789abcdef" * 2 + "01234567"


def test_hex_and_base32_info_hashes() -> None:
    b32 = base64.b32encode(bytes.fromhex(HEX)).decode()
    assert parse_info_hash(HEX.upper()) == HEX
    assert parse_info_hash(b32) == HEX
    assert parse_info_hash(b32.lower()) == HEX
    for bad in ("", "ab" * 19, "zz" * 20, "1" * 32, HEX + "0"):
        with pytest.raises(MagnetError, match="40 hex digits or 32 base32"):
            parse_info_hash(bad)


def test_a_magnet_with_name_and_trackers() -> None:
    text = (
        f"magnet:?xt=urn:btih:{HEX}&dn=My%20file.bin&tr=udp%3A%2F%2F10.0.0.1%3A6969"
        "&tr=http://hub:8200/announce&tr=http://hub:8200/announce&xl=1234"
    )
    magnet = parse_magnet(text)
    assert magnet == Magnet(HEX, ("udp://10.0.0.1:6969", "http://hub:8200/announce"), "My file.bin")
    assert parse_magnet(magnet.uri()) == magnet


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("http://x/", "starts with"),
        ("magnet:?dn=x", "exactly one xt"),
        (f"magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{HEX}", "exactly one xt"),
        ("magnet:?xt=urn:btmh:1220" + "00" * 32, "urn:btih"),
        (f"magnet:?xt=urn:btih:{HEX}&ws=http://evil/", "not taken"),
        (f"magnet:?xt=urn:btih:{HEX}&x.pe=10.0.0.1:1", "not taken"),
        (f"magnet:?xt=urn:btih:{HEX}&tr=file:///etc/passwd", "must be http"),
        (f"magnet:?xt=urn:btih:{HEX}&tr=http://h:99999/a", "malformed"),
        (f"magnet:?xt=urn:btih:{HEX}&tr=udp://:80", "no host"),
        (f"magnet:?xt=urn:btih:{HEX}&tr", "without '='"),
        (f"magnet:?xt=urn:btih:{HEX}&dn=a%0Ab", "control"),
        (f"magnet:?xt=urn:btih:{HEX}&dn=%ff", "not UTF-8"),
        (f"magnet:?xt=urn:btih:{HEX}&xl=-1", "whole number"),
        (f"magnet:?xt=urn:btih:{HEX} ", "spaces"),
        ("magnet:?xt=urn:btih:" + "a" * MAX_MAGNET, "longer than"),
    ],
)
def test_refused(text: str, match: str) -> None:
    with pytest.raises(MagnetError, match=match):
        parse_magnet(text)


def test_at_most_so_many_trackers() -> None:
    trackers = "".join(f"&tr=http://t{i}/a" for i in range(MAX_TRACKERS + 1))
    with pytest.raises(MagnetError, match="more than"):
        parse_magnet(f"magnet:?xt=urn:btih:{HEX}{trackers}")


def test_check_tracker() -> None:
    assert check_tracker("udp://127.0.0.1:6969") == "udp://127.0.0.1:6969"
    with pytest.raises(MagnetError, match="port 0"):
        check_tracker("http://h:0/announce")


def test_the_task_takes_magnet_and_pin() -> None:
    task = parse_task(
        {"event": "download", "args": {"magnet": f"magnet:?xt=urn:btih:{HEX}", "pin": "60"}},
        now=0,
    )
    assert task.args["pin"] == 60.0
    for pin in (-1, "x", True, float("inf"), 1e12):
        with pytest.raises(TaskError, match=r"args\.pin"):
            parse_task({"event": "download", "args": {"pin": pin}}, now=0)


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=300)
    | st.from_regex(
        r"magnet:\?(xt=urn:btih:[0-9a-zA-Z]{0,41}|[a-z.]{1,4}=[^&]{0,40}|&)*", fullmatch=True
    )
)
def test_any_text_gives_a_magnet_or_a_magnet_error(text: str) -> None:
    try:
        magnet = parse_magnet(text)
    except MagnetError:
        return
    assert len(magnet.sha1) == 40
    assert parse_magnet(magnet.uri()) == magnet


_TRACKER = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}:{port}/announce",
    st.sampled_from(["http", "https", "udp"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True),
    st.integers(1, 65535),
)


@settings(max_examples=200, deadline=None)
@given(
    sha1=st.binary(min_size=20, max_size=20).map(bytes.hex),
    trackers=st.lists(_TRACKER, max_size=MAX_TRACKERS, unique=True),
    name=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=100),
)
def test_uri_round_trips(sha1: str, trackers: list[str], name: str) -> None:
    magnet = Magnet(sha1, tuple(trackers), name)
    assert parse_magnet(magnet.uri()) == magnet
