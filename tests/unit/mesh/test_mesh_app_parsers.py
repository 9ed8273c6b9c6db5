"""Property tests of the built-in apps' parsers: any input gives a value or the app's
own error (which the app turns into a reply), never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smartget.errors import ConfigError, UpdateError
from smartget.mesh.apps.console import parse_line
from smartget.mesh.apps.shell import parse_argv
from smartget.mesh.apps.update import parse_version
from smartget.mesh.settings import MAX_PEERS_FILE, read_peers_file

CONSOLE_SHAPES = st.from_regex(
    r"(\(file\))?(\(net [a-z&*]{0,8}\)?)?[a-z]{0,6}:?[^;\n]{0,12};?([a-z]{0,3}:?[a-z]{0,3},?){0,3}",
    fullmatch=True,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | CONSOLE_SHAPES)
def test_console_lines_parse_or_raise_value_error(line: str) -> None:
    try:
        dp, is_file = parse_line(line)
    except ValueError:
        return
    assert dp.app
    assert dp.method == ("file" if is_file else "post")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | st.text(max_size=60).map(str.encode))
@example(b'["ls", 1]')
@example(b"echo 'unclosed")
@example(b"\xff\xfe")
def test_shell_bodies_parse_or_raise_value_error(body: bytes) -> None:
    try:
        argv = parse_argv(body)
    except ValueError:
        return
    assert argv
    assert all(isinstance(a, str) for a in argv)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[0-9.]{0,30}", fullmatch=True))
@example("1." * 7 + "1")
@example("٣.1")  # a digit to Python, not to a version
def test_versions_parse_or_raise_update_error(text: str) -> None:
    try:
        version = parse_version(text)
    except UpdateError:
        return
    assert 1 <= len(version) <= 6
    assert ".".join(map(str, version)) == ".".join(str(int(p)) for p in text.split("."))


def test_version_examples() -> None:
    assert parse_version("1.4.2") == (1, 4, 2)
    with pytest.raises(UpdateError, match="dotted numbers"):
        parse_version("1.x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=120).map(str.encode))
def test_peers_files_parse_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("peers") / "address.txt"
    path.write_bytes(data)
    try:
        peers = read_peers_file(path)
    except ConfigError:
        return
    assert all(0 <= port <= 65535 for _, port in peers)


def test_peers_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "address.txt"
    path.write_bytes(b"127.0.0.1:1\n" * (MAX_PEERS_FILE // 12 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        read_peers_file(path)
