"""Programs written for the original datahub (pro711/smartget, seed 000) run unchanged.

``OriginalClient`` behaves byte for byte like the original's ``SmartGetProtocol``
(``protocol.py``): one connection per command, the command sent with no line end, the
socket left open, one ``recv(1024)`` for the reply. Ported to Python 3 (bytes), and
with a socket timeout so that a hub that never answers fails the test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import textwrap
import time

import pytest

from smartget.hub.app import Hub
from smartget.hub.datahub import SmartgetDataHub, SmartgetNode
from smartget.net import free_port
from tests.helpers import stop_process, wait_until

REPLY_WITHIN = 5.0


class OriginalClient:
    """pro711/smartget protocol.py's SmartGetProtocol, as its users call it."""

    def __init__(self, datahub: tuple[str, int], port: int = 0, source: str = "127.0.0.2"):
        self._datahub = datahub
        self.port = port
        self.source = source
        self.node_id = 0

    def connect(self) -> None:
        self._datahub_socket = socket.socket()
        self._datahub_socket.settimeout(REPLY_WITHIN)
        self._datahub_socket.bind((self.source, 0))
        self._datahub_socket.connect(self._datahub)

    def _call(self, command: bytes) -> list[bytes]:
        self.connect()
        self._datahub_socket.send(command)  # no line end, no shutdown: as the original
        message_list = self._datahub_socket.recv(1024).split(b"\r\n")
        self._datahub_socket.close()
        return message_list

    def register(self) -> int:
        message_list = self._call(b"`register %d" % self.port)
        assert message_list[0] == b"200 OK", message_list
        self.node_id = int(message_list[1])
        return self.node_id

    def deregister(self) -> list[bytes]:
        return self._call(b"`deregister %d" % self.port)

    def setstatus(self, status: int) -> list[bytes]:
        return self._call(b"`setstatus %d %d" % (self.node_id, status))

    def requestnodes(self, n: int = 1) -> tuple[str, int] | list[tuple[str, int]] | None:
        node_list = []
        message_list = self._call(b"`requestnodes %d" % n)
        if message_list[0] != b"200 OK":
            return None
        for line in message_list[1:]:
            if not line:  # the reply's last CRLF (the original client tripped on it)
                continue
            addr, port = line.split(b" ")
            if n == 1:
                return (addr.decode(), int(port))
            node_list.append((addr.decode(), int(port)))
        return node_list


@pytest.mark.asyncio
async def test_every_command_of_an_original_client_is_answered(hub: Hub) -> None:
    address = hub.text_address
    node = OriginalClient(address, port=4321, source="127.0.0.2")
    other = OriginalClient(address, port=4322, source="127.0.0.3")
    started = time.monotonic()
    node_id = await asyncio.to_thread(node.register)
    assert node_id == 1
    assert await asyncio.to_thread(other.register) == 2  # nodes ask for nodes
    assert await asyncio.to_thread(node.setstatus, 2) == [b"200 OK", b""]
    assert await asyncio.to_thread(other.requestnodes, 1) == ("127.0.0.2", 4321)
    assert hub.registry.get_node_status(node_id) == 1
    assert await asyncio.to_thread(node.deregister) == [b"200 OK", b""]
    assert await asyncio.to_thread(node.deregister) == [b"404 NOT FOUND", b""]
    # Six commands, each answered after the quiet period, not the line timeout.
    assert time.monotonic() - started < 6 * hub.settings.line_timeout


@pytest.mark.asyncio
async def test_a_command_split_across_two_segments(hub: Hub) -> None:
    def split_register() -> bytes:
        with socket.create_connection(hub.text_address, timeout=REPLY_WITHIN) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.send(b"`regis")
            time.sleep(0.01)  # the scenario: a second segment, not a synchronisation
            sock.send(b"ter 4321")
            return sock.recv(1024)

    assert await asyncio.to_thread(split_register) == b"200 OK\r\n1\r\n"


@pytest.mark.asyncio
async def test_a_node_declares_itself_a_zombie(hub: Hub) -> None:
    node = OriginalClient(hub.text_address, port=4000, source="127.0.0.4")
    node_id = await asyncio.to_thread(node.register)
    await asyncio.to_thread(node.setstatus, 3)
    assert await asyncio.to_thread(node.setstatus, -1) == [b"200 OK", b""]
    assert hub.registry.get_node_status(node_id) == -1
    asker = OriginalClient(hub.text_address, port=4001, source="127.0.0.5")
    await asyncio.to_thread(asker.register)
    assert await asyncio.to_thread(asker.requestnodes, 1) is None  # a zombie is not handed out
    await asyncio.to_thread(node.setstatus, 1)  # and comes back with its next status
    assert await asyncio.to_thread(asker.requestnodes, 1) == ("127.0.0.4", 4000)


def test_code_using_the_original_classes_runs() -> None:
    """As a user of datahub.py's SmartgetDataHub would write it."""
    dh = SmartgetDataHub()
    node = dh.make_node("10.0.0.5", 1234)
    assert dh.add_node(node) == 1
    assert dh.add_node(node) == 0  # the original warns and returns 0
    assert dh.get_node_ids_by_addr_port("10.0.0.5", 1234) == [node.node_id]
    assert dh.set_node_status(node.node_id, 2) == node.node_id
    assert dh.set_node_status(99, 2) == 0
    assert dh.get_available_node_ids() == [node.node_id]
    assert dh.decrease_node_status(node.node_id) == node.node_id
    assert dh.get_node_status(node.node_id) == 1
    assert dh.get_idle_node_ids() == []
    assert dh.get_n_idle_nodes() == 0
    assert isinstance(dh.get_node_by_id(node.node_id), SmartgetNode)
    dh.rm_node(node.node_id)
    dh.rm_node(node.node_id)  # warns, as the original
    assert dh.get_nodes() == {}
    assert SmartgetNode(7, "10.0.0.6", 80).status == 0


@pytest.mark.asyncio
async def test_the_original_daemon_program_serves_original_clients() -> None:
    port = free_port("127.0.0.1")
    program = textwrap.dedent(
        f"""
        from smartget.hub.datahub import SmartgetDataHubDaemon
        dhd = SmartgetDataHubDaemon({port})
        dhd.run()
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        client = OriginalClient(("127.0.0.1", port), port=5555, source="127.0.0.6")

        def accepting() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        await wait_until(accepting, within=20, what="the daemon's port")
        assert await asyncio.to_thread(client.register) == 1
        assert await asyncio.to_thread(client.setstatus, 1) == [b"200 OK", b""]
    finally:
        await stop_process(proc)
    assert proc.returncode == 0
