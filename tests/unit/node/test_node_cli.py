"""``smartget node``: the options the issue lists, and errors a user can act on."""

from __future__ import annotations

from click.testing import CliRunner

from smartget.cli import cli

OPTIONS = [
    "--ip", "--zone", "--wwwroot", "--data-dir", "--api", "--files", "--bt-port", "--hub",
    "--hub-http", "--report-url", "--report-interval", "--user", "--password", "--token",
    "--tracker", "--config", "--upload-limit", "--download-limit", "--log-level",
]  # fmt: skip


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
