"""``smartget node``: the options the issue lists, and errors a user can act on."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from smartget.cli import cli
from smartget.node import cli as node_cli
from smartget.node.policy import REQUEST_QUEUE, UNCAPPED_REQUEST_QUEUE, request_queue_for
from smartget.node.policy import swarm_tuning as _swarm_tuning
from smartget.node.settings import EngineSettings

OPTIONS = [
    "--ip", "--zone", "--wwwroot", "--data-dir", "--api", "--files", "--bt-port", "--hub",
    "--hub-http", "--report-url", "--report-interval", "--user", "--password", "--token",
    "--tracker", "--config", "--upload-limit", "--download-limit", "--log-level",
    "--peer-request-queue",
]  # fmt: skip
REQUIRED = ["--ip", "127.0.3.1", "--zone", "z", "--wwwroot", "w", "--data-dir", "d"]


def test_help_lists_every_option() -> None:
    result = CliRunner().invoke(cli, ["node", "--help"])
    assert result.exit_code == 0
    for option in OPTIONS:
        assert option in result.output


def test_missing_required_and_bad_values() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["node", "--zone", "z", "--wwwroot", "w", "--data-dir", "d"])
    assert result.exit_code == 2
    assert "--ip" in result.output
    result = runner.invoke(
        cli,
        ["node", "--ip", "127.0.3.1", "--zone", "z", "--wwwroot", "w", "--data-dir", "d",
         "--upload-limit", "fast"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "expected a size" in result.output


def _settings_from(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """The NodeSettings that ``smartget node ARGS`` would run with (nothing starts)."""
    seen: list[Any] = []

    async def serve(settings: object) -> None:
        seen.append(settings)

    monkeypatch.setattr(node_cli, "_serve", serve)
    monkeypatch.setattr(node_cli, "setup_logging", lambda level: None)
    result = CliRunner().invoke(cli, ["node", *REQUIRED, *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_peer_request_queue_reaches_libtorrent(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(monkeypatch, "--peer-request-queue", "64")
    assert settings.peer_request_queue == 64
    tuning = _swarm_tuning(EngineSettings(peer_request_queue=settings.peer_request_queue))
    assert tuning["max_allowed_in_request_queue"] == 64  # the reqq peers are told
    assert tuning["send_buffer_low_watermark"] == 64 * 16384  # every request is read


def test_peer_request_queue_default_follows_the_upload_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings_from(monkeypatch, "--upload-limit", "20MiB/s")
    assert settings.peer_request_queue is None
    tuning = _swarm_tuning(EngineSettings(upload_limit=settings.upload_limit))
    assert tuning["max_allowed_in_request_queue"] == 32  # 25 ms of 20 MiB/s in 16 KiB blocks
    # Under a low cap, the fleet's measured 8 (engine._swarm_tuning).
    assert request_queue_for(4 << 20) == REQUEST_QUEUE


def test_peer_request_queue_default_without_a_cap_covers_a_wan_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings_from(monkeypatch)
    assert settings.upload_limit == 0
    tuning = _swarm_tuning(EngineSettings(upload_limit=settings.upload_limit))
    # 500 x 16 KiB per round trip: up to 82 MB/s a connection at 100 ms RTT, 36 measured
    # for 64 MiB with the ramp-up (benchmarks/wan.py); 8 gave 1.1.
    assert tuning["max_allowed_in_request_queue"] == UNCAPPED_REQUEST_QUEUE == 500
    assert tuning["send_buffer_low_watermark"] == 1 << 20  # read-ahead stays bounded


def test_peer_request_queue_rejects_nonsense() -> None:
    runner = CliRunner()
    for bad in ("0", "-1", "many", "5000"):
        result = runner.invoke(cli, ["node", *REQUIRED, "--peer-request-queue", bad])
        assert result.exit_code == 2, bad
        assert "--peer-request-queue" in result.output


def test_wwwroot_is_repeatable_and_the_first_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings_from(monkeypatch, "--wwwroot", "disk2", "--wwwroot", "disk3")
    assert str(settings.wwwroot) == "w"
    assert [str(p) for p in settings.extra_roots] == ["disk2", "disk3"]


def test_fetch_and_http_limits_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(monkeypatch)
    assert settings.fetch_allow == ()
    assert settings.fetch_max_size == 64 << 30
    assert settings.fetch_timeout > 0
    settings = _settings_from(
        monkeypatch,
        "--fetch-allow", "10.0.0.0/8", "--fetch-allow", "127.0.0.1",
        "--fetch-max-size", "1GiB", "--fetch-timeout", "60",
        "--http-header-timeout", "2", "--http-max-connections", "50", "--http-max-per-ip", "5",
    )  # fmt: skip
    assert settings.fetch_allow == ("10.0.0.0/8", "127.0.0.1")
    assert settings.fetch_max_size == 1 << 30
    assert settings.fetch_timeout == 60
    assert (settings.http_limits.header_timeout, settings.http_limits.max_connections) == (2, 50)
    assert settings.http_limits.max_per_ip == 5


def test_a_bad_fetch_allow_network_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["node", *REQUIRED, "--fetch-allow", "10.0.0.0/33"])
    assert result.exit_code != 0
    assert "--fetch-allow" in result.output
    assert "10.0.0.0/33" in result.output
