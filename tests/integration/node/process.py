"""A node as its own process (``python -m smartget node``), for tests that attack it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from smartget.net import free_port
from tests.helpers import stop_process, wait_until

TOKEN = "node-process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class NodeProcess:
    proc: asyncio.subprocess.Process
    ip: str
    api_url: str
    files_port: int
    wwwroot: Path
    data_dir: Path
    log: Path

    @property
    def files_url(self) -> str:
        return f"http://{self.ip}:{self.files_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def node_process(
    tmp: Path, ip: str, *args: str, token: str | None = TOKEN, ready: bool = True
) -> AsyncIterator[NodeProcess]:
    """Start ``smartget node`` on ``ip`` (extra ``args``); stop it on exit.

    The token goes by the environment (SMARTGET_NODE_TOKEN), as it should in production.
    """
    home = tmp / ip
    wwwroot, data_dir, log = home / "www", home / "data", home / "node.log"
    home.mkdir(parents=True, exist_ok=True)
    api_port, files_port = free_port(ip), free_port(ip)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTGET_")}
    if token is not None:
        env["SMARTGET_NODE_TOKEN"] = token
    argv = [
        sys.executable, "-m", "smartget", "node", "--ip", ip, "--zone", "adv",
        "--wwwroot", str(wwwroot), "--data-dir", str(data_dir),
        "--api", f"{ip}:{api_port}", "--files", f"{ip}:{files_port}", "--bt-port", "0",
        *args,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env
        )
    node = NodeProcess(proc, ip, f"http://{ip}:{api_port}", files_port, wwwroot, data_dir, log)
    try:
        if ready:

            async def up() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"node exited ({proc.returncode}): {node.log_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    async with httpx.AsyncClient(timeout=1) as client:
                        reply = await client.get(f"{node.api_url}/ping", headers=AUTH)
                        files = await client.get(f"{node.files_url}/-")
                        return reply.status_code in (200, 401) and files.status_code == 404
                return False

            await wait_until(up, 30, "the node process answering /ping and its file server")
        yield node
    finally:
        await stop_process(proc)
