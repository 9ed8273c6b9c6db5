"""The hub's secrets stay its own (issue 12, item 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartget.hub.app import HubSettings, running

pytestmark = pytest.mark.asyncio


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
