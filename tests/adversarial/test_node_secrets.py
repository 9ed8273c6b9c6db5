"""Issue 12, item 13 (node and demo): secrets stay out of logs and command lines, and
secret files are the owner's alone.

Real processes: a node on 127.0.16.40 (its log is what an operator's log shipper sees),
and the demo's fleet, whose command lines anyone on the machine can read with ``ps``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from smartget.demo import local_fleet
from tests.integration.node.process import node_process

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
async def test_the_generated_password_is_not_logged(tmp_path: Path) -> None:
    async with node_process(tmp_path, "127.0.16.40", token=None) as node:
        path = node.data_dir / "node.password"
        password = path.read_text().strip()
        assert path.stat().st_mode & 0o777 == 0o600
        log = node.log_text()
        assert password not in log
        assert str(path) in log  # where to find it instead
        md5 = hashlib.md5(password.encode()).hexdigest()
        async with httpx.AsyncClient(timeout=5) as client:
            reply = await client.get(f"{node.api_url}/ping", params={"user": "admin", "pwd": md5})
        assert reply.text == "PONG"


@pytest.mark.asyncio
async def test_a_password_file_that_others_could_read_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "127.0.16.41" / "data" / "node.password"
    path.parent.mkdir(parents=True)
    path.write_text("kept-password\n")
    path.chmod(0o644)
    async with node_process(tmp_path, "127.0.16.41", token=None) as node:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == "kept-password"
        assert "kept-password" not in node.log_text()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_the_demo_puts_no_secret_on_a_command_line(tmp_path: Path) -> None:
    with local_fleet(tmp_path, nodes=2, ip_base=160, log_level="warning") as fleet:
        assert len(fleet.token) >= 16
        for name, proc in fleet.procs.items():
            assert fleet.token not in _cmdline(proc.pid), name
        # The fleet still works with the token passed another way.
        auth = {"Authorization": f"Bearer {fleet.token}"}
        listed = httpx.get(f"{fleet.hub_url}/api/nodes", headers=auth, timeout=5).json()
        assert len(listed) == 2
        for node in listed:
            assert httpx.get(f"{node['api_url']}/ping", headers=auth, timeout=5).text == "PONG"
