"""The hub's secrets stay its own (issue 12, item 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartget.hub.app import HubSettings, running


@pytest.mark.asyncio
async def test_an_existing_token_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    data.mkdir()
    (data / "hub.token").write_text("old-token\n")
    (data / "hub.token").chmod(0o644)
    settings = HubSettings(data_dir=data, listen=("127.0.7.1", 0), http=None, no_udp_tracker=True)
    async with running(settings) as hub:
        assert hub.token == "old-token"
    assert (data / "hub.token").stat().st_mode & 0o777 == 0o600
    assert (data / "hub.sqlite3").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("argv", "envvar"),
    [
        (["hub", "--data-dir", "d", "--token", "s3cret"], "SMARTGET_HUB_TOKEN"),
        (
            ["node", "--ip", "127.0.0.1", "--zone", "z", "--wwwroot", "w", "--data-dir", "d",
             "--token", "s3cret"],
            "SMARTGET_NODE_TOKEN",
        ),
        (["push", "http://o/f", "--token", "s3cret"], "SMARTGET_HUB_TOKEN"),
        (["jobs", "list", "--token", "s3cret"], "SMARTGET_HUB_TOKEN"),
    ],
)  # fmt: skip
def test_a_secret_on_the_command_line_is_refused(argv: list[str], envvar: str) -> None:
    """Every user can read a command line with ps (12.13): secrets come by environment."""
    from click.testing import CliRunner

    from smartget.cli import cli

    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert "readable by every user" in result.output
    assert envvar in result.output
