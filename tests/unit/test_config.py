"""Settings: HOST:PORT, sizes, and --config TOML files feeding click options."""

import dataclasses
import logging
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smartget.config import (
    HOSTPORT,
    REQUIRED,
    common_options,
    config_from,
    options_from,
    parse_hostport,
    parse_size,
    setting,
)
from smartget.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:20110", ("0.0.0.0", 20110)),
        (":8200", ("0.0.0.0", 8200)),
        ("8200", ("0.0.0.0", 8200)),
        ("[::1]:80", ("::1", 80)),
        ("example.org:0", ("example.org", 0)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", "host:70000", "[::1]80", "h:-1"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text)


def test_parse_size() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("10MB") == 10_000_000
    assert parse_size("4096") == 4096
    assert parse_size("1.5k") == 1500
    with pytest.raises(ConfigError, match="64MiB"):
        parse_size("lots")


@click.command()
@click.option("--listen", type=HOSTPORT, default="0.0.0.0:1")
@click.option("--node-ttl", type=float, default=60.0)
@common_options
def sample(listen: tuple[str, int], node_ttl: float, log_level: str) -> None:
    click.echo(f"{listen[0]} {listen[1]} {node_ttl} {log_level}")


def test_config_file_sets_defaults_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text('[sample]\nlisten = "127.0.0.9:5"\nnode-ttl = 7\nlog_level = "debug"\n')
    runner = CliRunner()
    result = runner.invoke(sample, ["--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "127.0.0.9 5 7.0 debug"
    result = runner.invoke(sample, ["--node-ttl", "3", "--config", str(config)])
    assert result.output.strip() == "127.0.0.9 5 3.0 debug"


def test_config_file_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text("nodettl = 7\n")
    result = CliRunner().invoke(sample, ["--config", str(config)])
    assert result.exit_code == 2
    assert "unknown key(s)" in result.output
    assert "nodettl" in result.output


def test_config_file_bad_toml(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text("listen = \n")
    result = CliRunner().invoke(sample, ["--config", str(config)])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output


@click.group()
def outer() -> None:
    pass


outer.add_command(sample)


def test_config_file_nested_tables_for_subcommands(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text("node-ttl = 1\n[outer.sample]\nnode-ttl = 9\n[outer.other]\nx = 1\n")
    result = CliRunner().invoke(outer, ["sample", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "0.0.0.0 1 9.0 info"


# -- property tests: any text gives a value or ConfigError, nothing else ----------------


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40) | st.from_regex(r"\[?[0-9a-f:.]{0,20}\]?:?[0-9²٣]{0,8}", fullmatch=True)
)
@example("²")  # a digit to str.isdigit, not to int()
def test_parse_hostport_raises_only_config_error(text: str) -> None:
    try:
        host, port = parse_hostport(text)
    except ConfigError:
        return
    assert 0 <= port <= 65535
    assert isinstance(host, str)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=30)
    | st.from_regex(r"[0-9]{1,400}(\.[0-9]{0,5})?[kKmMgGtT]?i?[bB]?", fullmatch=True)
)
@example("9" * 400)  # beyond a float: inf
def test_parse_size_raises_only_config_error(text: str) -> None:
    try:
        size = parse_size(text)
    except ConfigError:
        return
    assert size >= 0


@dataclasses.dataclass(frozen=True)
class _Example:
    ttl: float = setting(60.0, "Seconds of silence.", min=0.1)
    count: int = setting(39, "Retries.", min=0, max=100)
    listen: tuple[str, int] = setting(("0.0.0.0", 1), "Where.", click_type=HOSTPORT)
    loud: bool = setting(False, "Shout.")


def test_options_come_from_the_config_and_build_it_back() -> None:
    seen: list[_Example] = []

    @click.command()
    @options_from(_Example)
    def cmd(**kwargs: Any) -> None:
        seen.append(config_from(_Example, kwargs))
        assert kwargs == {}

    runner = CliRunner()
    assert runner.invoke(cmd, []).exit_code == 0
    assert seen[-1] == _Example()
    result = runner.invoke(cmd, ["--ttl", "2.5", "--count", "7", "--listen", "1.2.3.4:5", "--loud"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == _Example(2.5, 7, ("1.2.3.4", 5), True)
    assert runner.invoke(cmd, ["--count", "101"]).exit_code == 2  # the range is the field's
    help_text = runner.invoke(cmd, ["--help"]).output
    assert "Seconds of silence." in help_text
    assert "default: 60.0" in help_text


def test_a_required_setting_makes_a_required_option() -> None:
    @dataclasses.dataclass(frozen=True)
    class Needs:
        where: str = setting(REQUIRED, "Where.")

    @click.command()
    @options_from(Needs)
    def cmd(**kwargs: Any) -> None:
        config_from(Needs, kwargs)

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    assert "Missing option '--where'" in result.output


def test_repeated_log_records_are_limited_and_counted() -> None:
    from smartget.config import RepeatFilter

    limit = RepeatFilter(burst=3, window=3600)
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "accept failed: %s", ("EMFILE",), None)
    passed = [limit.filter(record) for _ in range(1000)]
    assert passed.count(True) == 3
    other = logging.LogRecord("x", logging.ERROR, "f", 1, "another", (), None)
    assert limit.filter(other)
    limit.window = 0  # the window ends: the next one says how many were dropped
    assert limit.filter(record)
    assert "997 more like it were not logged" in str(record.msg)
