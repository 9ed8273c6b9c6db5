"""Learning addresses from heartbeats, apps from a directory, config files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from smartget.cli import cli
from smartget.mesh import Datapack, Node
from tests.helpers import wait_until

from .conftest import Probe, fast


@pytest.mark.asyncio
async def test_nodes_dial_addresses_they_learn(pki: Callable[[str], Path], tmp_path: Path) -> None:
    nodes: list[Node] = []
    try:
        previous = None
        for i, name in enumerate(["x", "y", "z"]):
            settings = fast(
                pki(name),
                tmp_path / name,
                f"127.0.2.{60 + i}",
                peers=[previous] if previous else [],
                apps=["logger"],
            )
            settings.dial_learned = True
            node = Node(settings)
            await node.start()
            nodes.append(node)
            previous = node.address
        x, _, z = nodes
        # z only knew y; it learns x's address from y's heartbeat and links to it.
        await wait_until(lambda: "x" in z.links and "z" in x.links, 15)
        assert x.router.next_hop("z") == "z"
    finally:
        for node in nodes:
            await node.aclose()


@pytest.mark.asyncio
async def test_apps_dir_module_is_loaded_and_served(
    pki: Callable[[str], Path], tmp_path: Path
) -> None:
    apps_dir = tmp_path / "plugins"
    apps_dir.mkdir()
    (apps_dir / "upper.py").write_text(
        "from smartget.mesh.apps import App\n"
        "class Upper(App):\n"
        "    name = 'upper'\n"
        "    async def run(self, ctx):\n"
        "        while True:\n"
        "            dp = await ctx.receive()\n"
        "            ctx.send(dp.reply(dp.body.upper()))\n"
        "def create_app():\n"
        "    return Upper()\n"
    )
    probe = Probe()
    settings = fast(
        pki("solo"), tmp_path / "solo", "127.0.2.70", apps_dir=apps_dir, extra_apps={"probe": probe}
    )
    node = Node(settings)
    try:
        await node.start()
        await wait_until(lambda: probe.ctx is not None, 10)
        assert probe.ctx is not None
        reply = await probe.ctx.request(Datapack("post", "upper", {}, b"seed 001"), within=5)
        assert reply.body == b"SEED 001"
    finally:
        await node.aclose()


def test_run_reads_config_file_and_checks_id(pki: Callable[[str], Path], tmp_path: Path) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text('[run]\nid = "not-me"\nallow = ["shell=ops"]\nheartbeat = 2.5\n')
    # Through the `smartget` command, which turns SmartGet's errors into a message.
    argv = ["mesh", "run", "--tls-dir", str(pki("me")), "--listen", "127.0.2.71:0"]
    result = CliRunner().invoke(cli, [*argv, "--config", str(config)])
    assert result.exit_code != 0
    assert "does not match the certificate's 'me'" in result.output
    config.write_text("nonsense = 1\n")
    result = CliRunner().invoke(
        cli, ["mesh", "run", "--tls-dir", str(pki("me")), "--config", str(config)]
    )
    assert result.exit_code != 0
    assert "unknown key(s)" in result.output


@pytest.mark.asyncio
async def test_own_address_in_the_peers_file_is_dialed_once(
    pki: Callable[[str], Path], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.2.72", 0))
        port = sock.getsockname()[1]
    settings = fast(pki("me"), tmp_path / "me", "127.0.2.72", peers=[("127.0.2.72", port)])
    settings.listen = ("127.0.2.72", port)
    node = Node(settings)
    try:
        await node.start()
        await wait_until(lambda: node._addr_id.get(("127.0.2.72", port)) == "me", 10)
        await wait_until(lambda: not node.dialing, 10)
        dials, rounds = node.stats["dials"], node.stats["heartbeat_rounds"]
        await wait_until(lambda: node.stats["heartbeat_rounds"] >= rounds + 3, 10)
        assert node.stats["dials"] == dials  # known to be ourselves: not dialed again
        assert node.links == {}
    finally:
        await node.aclose()
