"""Pure parts of the built-in apps and the supervisor."""

from __future__ import annotations

import sys

import pytest

from smartget.errors import ConfigError
from smartget.mesh.apps.console import parse_line
from smartget.mesh.apps.shell import parse_argv
from smartget.mesh.loader import load_apps
from smartget.mesh.supervisor import supervise


def test_console_syntax() -> None:
    dp, is_file = parse_line("update:compress;update_to:*")
    assert (dp.app, dp.body, dp.head, is_file) == ("update", b"compress", {"update_to": "*"}, False)
    dp, _ = parse_line("(net miku)shell:uptime")
    assert dp.head == {"to": "miku"}
    assert dp.body == b"uptime"
    dp, is_file = parse_line("(file)(net miku)logger:/tmp/report.txt;k:v")
    assert (dp.method, dp.file, dp.head, is_file) == (
        "file",
        "/tmp/report.txt",
        {"k": "v", "to": "miku"},
        True,
    )
    dp, _ = parse_line("logger:a:b")  # the body keeps later colons
    assert dp.body == b"a:b"
    for bad in ("no colon", ":body", "(net x logger:a", "a:b;novalue"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_line(bad)


def test_shell_argv_is_never_a_shell_string() -> None:
    assert parse_argv(b'["ls", "-l", "a b"]') == ["ls", "-l", "a b"]
    assert parse_argv(b"echo 'a b' $HOME; rm") == ["echo", "a b", "$HOME;", "rm"]
    for bad in (b"", b"[1, 2]", b'"unclosed', b"\xff"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_argv(bad)


def test_load_apps(tmp_path) -> None:
    (tmp_path / "echo.py").write_text(
        "from smartget.mesh.apps import App\n"
        "class Echo(App):\n"
        "    name = 'echo'\n"
        "def create_app():\n"
        "    return Echo()\n"
    )
    apps = load_apps(["logger", "shell"], tmp_path)
    assert sorted(apps) == ["echo", "logger", "shell"]
    assert apps["shell"].closed_by_default
    with pytest.raises(ConfigError, match="unknown app 'nope'"):
        load_apps(["nope"], None)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="failed to load"):
        load_apps([], tmp_path)


def test_supervisor_restarts_on_zero_and_stops_on_other(tmp_path) -> None:
    counter = tmp_path / "count"
    script = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "sys.exit(0 if n < 2 else 7)\n"
    )
    status = supervise([sys.executable, "-c", script], delay=0)
    assert status == 7
    assert counter.read_text() == "3"
    assert supervise([sys.executable, "-c", "pass"], delay=0, max_restarts=1) == 0
    assert supervise([str(tmp_path / "missing")], delay=0) == 127


def test_entry_point_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from smartget.mesh.apps import ENTRY_POINT_GROUP, App

    class Transcode(App):
        name = "transcode"

    class FakeEntryPoint:
        name = "transcode"

        def load(self) -> type[App]:
            return Transcode

    def entry_points(group: str) -> list[FakeEntryPoint]:
        return [FakeEntryPoint()] if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert isinstance(load_apps(["transcode"], None)["transcode"], Transcode)
