"""Five in-process nodes in a line a-b-c-d-e on real mutual-TLS sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from smartget.errors import AuthError, MeshError
from smartget.mesh import Datapack, Node
from smartget.mesh.apps import sha256_file
from smartget.mesh.ca import client_context, load_identity
from smartget.mesh.client import send_one
from smartget.mesh.datapack import encode, encode_head
from tests.helpers import wait_until

from .conftest import Probe

Line = tuple[dict[str, Node], dict[str, Probe]]


@pytest.mark.asyncio
async def test_a_to_e_through_proxies_and_reply(line: Line) -> None:
    nodes, probes = line
    assert set(nodes["a"].links) == {"b"}
    probes["a"].ctx.send(Datapack("post", "probe", {"to": "e"}, b"hello e"))  # type: ignore[union-attr]
    dp = await probes["e"].next()
    assert dp.body == b"hello e"
    assert dp.origin == "a"  # proven by a's signature through b, c, d
    assert dp.head["hops"] == "4"
    probes["e"].ctx.send(dp.reply(b"hello a"))  # type: ignore[union-attr]
    back = await probes["a"].next()
    assert (back.method, back.body, back.head["re"]) == ("reply", b"hello a", dp.flag)


@pytest.mark.asyncio
async def test_hop_list(line: Line) -> None:
    _, probes = line
    probes["a"].ctx.send(Datapack("post", "probe", {"to": "c&b&d"}, b"zigzag"))  # type: ignore[union-attr]
    assert (await probes["d"].next()).body == b"zigzag"


@pytest.mark.asyncio
async def test_broadcast_reaches_every_direct_peer_once(line: Line) -> None:
    _, probes = line
    probes["c"].ctx.send(Datapack("post", "probe", {"to": "*"}, b"all"))  # type: ignore[union-attr]
    assert (await probes["b"].next()).body == b"all"
    assert (await probes["d"].next()).body == b"all"
    # Heartbeats keep flowing; nothing else arrives anywhere.
    await asyncio.sleep(0.6)
    assert all(probes[n].empty() for n in "abcde")


@pytest.mark.asyncio
async def test_shell_closed_unless_opened(line: Line) -> None:
    _nodes, probes = line
    ctx = probes["b"].ctx
    assert ctx is not None
    refused = await ctx.request(Datapack("post", "shell", {"to": "e"}, b"echo hi"), within=10)
    assert refused.head.get("error") == "refused"
    assert b"may not use app 'shell'" in refused.body
    # d has no --allow for shell at all: closed even to a.
    ctx_a = probes["a"].ctx
    assert ctx_a is not None
    refused = await ctx_a.request(Datapack("post", "shell", {"to": "d"}, b"echo hi"), within=10)
    assert refused.head.get("error") == "refused"
    # e opened shell to a: runs an argv list, no shell string.
    argv = f'["{sys.executable}", "-c", "print(6 * 7)"]'.encode()
    done = await ctx_a.request(Datapack("post", "shell", {"to": "e"}, argv), within=20)
    assert done.head["exit"] == "0"
    assert done.body.strip() == b"42"


@pytest.mark.asyncio
async def test_unsigned_relayed_claim_is_not_trusted(line: Line) -> None:
    nodes, _ = line
    forged = Datapack("post", "shell", {"id": "a", "flag": "x1"}, b"id")
    with pytest.raises(AuthError, match="needs a proven sender"):
        nodes["e"]._authorize(forged, sender="d")
    assert nodes["e"]._authorize(Datapack("post", "logger", {"id": "a"}), sender="d") is None


@pytest.mark.asyncio
async def test_file_through_proxies_is_verified_and_confined(line: Line, tmp_path: Path) -> None:
    _, probes = line
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    ctx = probes["a"].ctx
    assert ctx is not None
    await ctx.send_file(src, to="e", app="probe", filename="in/payload.bin")
    dp = await probes["e"].next(within=20)
    assert dp.method == "file"
    assert dp.origin == "a"
    stored = Path(dp.file or "")
    assert stored == (tmp_path / "data" / "e" / "recv" / "in" / "payload.bin").resolve()
    assert sha256_file(stored) == sha256_file(src)
    tmp_dirs = [tmp_path / "data" / n / "tmp" for n in "abcd"]
    # The relays' copies are removed once sent on.
    await wait_until(lambda: not any(os.listdir(d) for d in tmp_dirs), 5)


async def _raw_link(
    node_dir: Path, address: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = client_context(load_identity(node_dir))
    return await asyncio.open_connection(*address, ssl=ctx, server_hostname="x")


@pytest.mark.asyncio
async def test_file_leading_outside_root_is_refused(
    line: Line, pki: Callable[[str], Path], tmp_path: Path
) -> None:
    nodes, probes = line
    _reader, writer = await _raw_link(pki("intruder"), nodes["e"].address)  # type: ignore[arg-type]
    body = b"evil"
    head = {"filename": "../../escape.txt", "sha256": hashlib.sha256(body).hexdigest()}
    writer.write(encode_head(Datapack("file", "probe", head), len(body)) + body)
    writer.write(encode(Datapack("post", "probe", {}, b"still open")))
    await writer.drain()
    assert (await probes["e"].next()).body == b"still open"
    assert not (tmp_path / "data" / "escape.txt").exists()
    assert not list((tmp_path / "data").glob("**/escape.txt"))
    writer.close()


@pytest.mark.asyncio
async def test_malformed_frame_closes_only_that_connection(
    line: Line, pki: Callable[[str], Path]
) -> None:
    nodes, probes = line
    reader, writer = await _raw_link(pki("fuzzer"), nodes["c"].address)  # type: ignore[arg-type]
    writer.write(b"post probe msw/0.1\nlength: nope\n\n")
    async with asyncio.timeout(10):
        while await reader.read(65536):  # c's heartbeat, then EOF when it closes us
            pass
    writer.close()
    assert set(nodes["c"].links) == {"b", "d"}
    probes["a"].ctx.send(Datapack("post", "probe", {"to": "e"}, b"after"))  # type: ignore[union-attr]
    assert (await probes["e"].next()).body == b"after"


@pytest.mark.asyncio
async def test_certificate_from_another_ca_is_refused(
    line: Line, pki: Callable[[str], Path]
) -> None:
    nodes, _ = line
    stranger = pki("a", ca="other-ca")  # even claiming a member's id
    address = nodes["c"].address
    assert address is not None
    with pytest.raises(MeshError, match="could not link"):
        await send_one(stranger, address, "e", "logger", b"hi", wait=3)

    async def raw_read() -> bytes:
        reader, _writer = await _raw_link(stranger, address)
        return await reader.read(1)

    with pytest.raises((ssl.SSLError, ConnectionError)):
        await raw_read()
    assert set(nodes["c"].links) == {"b", "d"}


@pytest.mark.asyncio
async def test_send_client_gets_reply_through_the_mesh(
    line: Line, pki: Callable[[str], Path]
) -> None:
    nodes, probes = line
    ops = pki("ops")
    address = nodes["b"].address
    assert address is not None

    async def echo() -> None:
        dp = await probes["e"].next()
        probes["e"].ctx.send(dp.reply(b"pong " + dp.body))  # type: ignore[union-attr]

    task = asyncio.create_task(echo())
    replies = await send_one(ops, address, "e", "probe", b"ping", wait=10)
    await task
    assert [r.body for r in replies] == [b"pong ping"]


@pytest.mark.asyncio
async def test_send_client_broadcast_means_the_via_nodes_peers(
    line: Line, pki: Callable[[str], Path]
) -> None:
    nodes, probes = line
    address = nodes["c"].address
    assert address is not None
    await send_one(pki("ops"), address, "*", "probe", b"to c's peers", wait=0)
    for name in "bd":
        dp = await probes[name].next()
        assert (dp.body, dp.origin) == (b"to c's peers", "ops")  # signed through c
    assert probes["c"].empty()
