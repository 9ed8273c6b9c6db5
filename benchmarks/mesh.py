"""Mesh benchmark: small-Datapack throughput and latency, file transfer vs plain TLS.

Not a test. Runs nodes in this process on 127.0.2.x (the mesh's loopback range) with
certificates from a throw-away CA, and prints a table::

    .venv/bin/python benchmarks/mesh.py [--packets 50000] [--file-mib 128]

Targets (issue 7): more than 20,000 small Datapacks per second on one link; file
transfer at >= 70% of a plain TLS socket copy of the same file.
"""

# A benchmark reads and writes local files inline on purpose, as the node does.
# ruff: noqa: ASYNC110, ASYNC230, ASYNC240

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from smartget.mesh import App, AppContext, Datapack, MeshSettings, Node
from smartget.mesh.apps import sha256_file
from smartget.mesh.ca import client_context, init_ca, issue_node, load_identity, server_context

CHUNK = 256 * 1024


class Sink(App):
    """Counts packets; echoes those that ask for it; keeps file deliveries."""

    name = "sink"

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.files: asyncio.Queue[Datapack] = asyncio.Queue()

    async def run(self, ctx: AppContext) -> None:
        while True:
            dp = await ctx.receive()
            if dp.method == "file":
                await self.files.put(dp)
            elif dp.head.get("echo"):
                ctx.send(dp.reply(dp.body))
            else:
                self.count += 1
                if self.count >= self.target:
                    self.done.set()


async def line(root: Path, n: int) -> tuple[list[Node], list[Sink]]:
    init_ca(root / "ca")
    nodes: list[Node] = []
    sinks: list[Sink] = []
    previous = None
    for i in range(n):
        name = f"n{i}"
        tls = issue_node(root / "ca", name, root / name).parent
        sink = Sink()
        settings = MeshSettings(
            tls_dir=tls,
            data_dir=root / "data" / name,
            listen=(f"127.0.2.{100 + i}", 0),
            peers=[previous] if previous else [],
            apps=[],
            extra_apps={"sink": sink},
            heartbeat=0.5,
            dial_learned=False,
        )
        node = Node(settings)
        await node.start()
        previous = node.address
        nodes.append(node)
        sinks.append(sink)
    async with asyncio.timeout(20):
        while nodes[0].router.next_hop(nodes[-1].node_id) is None:
            await asyncio.sleep(0.05)
    return nodes, sinks


async def throughput(src: Node, sink: Sink, dest: str, count: int) -> float:
    sink.count, sink.target = 0, count
    sink.done.clear()
    body = b"x" * 64
    start = time.perf_counter()
    for _ in range(count):
        src.send(Datapack("post", "sink", {"to": dest, "from": "sink"}, body))
        # Yield now and then so the writer and reader run while we produce.
        if _ % 2000 == 0:
            await asyncio.sleep(0)
    async with asyncio.timeout(300):
        await sink.done.wait()
    return count / (time.perf_counter() - start)


async def latency(src: Node, dest: str, rounds: int) -> list[float]:
    ctx = src.contexts["sink"]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await ctx.request(Datapack("post", "sink", {"to": dest, "echo": "1"}, b"ping"), 10)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def file_mesh(src: Node, sink: Sink, dest: str, path: Path) -> float:
    digest, size = await asyncio.to_thread(sha256_file, path)
    start = time.perf_counter()
    src.send(
        Datapack(
            "file",
            "sink",
            {"to": dest, "filename": "bench.bin", "sha256": digest},
            file=str(path),
        )
    )
    async with asyncio.timeout(600):
        dp = await sink.files.get()
    elapsed = time.perf_counter() - start
    os.unlink(dp.file or "")
    return size / elapsed / 2**20


class _FileReceiver(asyncio.Protocol):
    """The plain side: write every byte received to a file, as the mesh link does."""

    def __init__(self, path: Path, size: int, done: asyncio.Future[float]) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed when all bytes are in
        self.left = size
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.file.write(data)
        self.left -= len(data)
        if self.left <= 0 and not self.done.done():
            self.file.close()
            self.done.set_result(time.perf_counter())


class _FileSender(asyncio.Protocol):
    """The plain side's sender: transport writes with the same flow control as a link."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


async def file_plain_tls(root: Path, path: Path) -> float:
    """The same file over a bare asyncio TLS socket (same certificates), written to disk."""
    server_id, client_id = load_identity(root / "n1"), load_identity(root / "n0")
    size = path.stat().st_size
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    out = root / "plain.bin"
    server = await loop.create_server(
        lambda: _FileReceiver(out, size, done),
        "127.0.2.200",
        0,
        ssl=server_context(server_id),
    )
    port = server.sockets[0].getsockname()[1]
    transport, sender = await loop.create_connection(
        _FileSender, "127.0.2.200", port, ssl=client_context(client_id), server_hostname="x"
    )
    start = time.perf_counter()
    with open(path, "rb") as file:
        while data := file.read(CHUNK):
            transport.write(data)
            await sender.writable.wait()
    async with asyncio.timeout(600):
        end = await done
    transport.close()
    server.close()
    out.unlink()
    return size / (end - start) / 2**20


async def main(packets: int, file_mib: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="smartget-bench-mesh-") as tmp:
        root = Path(tmp)
        nodes, sinks = await line(root, 4)
        try:
            rows: list[tuple[str, str, str]] = []
            await throughput(nodes[0], sinks[1], "n1", 2000)  # warm up
            one = throughput(nodes[0], sinks[1], "n1", packets)
            rows.append(("small Datapacks, 1 TLS link", f"{await one:,.0f} /s", "> 20,000 /s"))
            three = await throughput(nodes[0], sinks[3], "n3", packets // 2)
            rows.append(("small Datapacks, 3 hops (signed)", f"{three:,.0f} /s", "-"))
            lat1 = await latency(nodes[0], "n1", 500)
            lat3 = await latency(nodes[0], "n3", 300)
            for label, lat in (("1 link", lat1), ("3 hops", lat3)):
                q = statistics.quantiles(lat, n=100)
                rows.append(
                    (f"round trip, {label}", f"p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms", "-")
                )
            path = root / "file.bin"
            with open(path, "wb") as file:
                for _ in range(file_mib):
                    file.write(os.urandom(2**20))
            # Alternate the two, best of `rounds` each: the machine is shared and noisy.
            plains, meshes = [], []
            for _ in range(rounds):
                plains.append(await file_plain_tls(root, path))
                meshes.append(await file_mesh(nodes[0], sinks[1], "n1", path))
            plain, mesh = max(plains), max(meshes)
            rows.append(
                (
                    f"file {file_mib} MiB, plain TLS copy",
                    f"{plain:,.0f} MiB/s (best of {rounds})",
                    "-",
                )
            )
            rows.append(
                (
                    f"file {file_mib} MiB, mesh (1 link)",
                    f"{mesh:,.0f} MiB/s (best of {rounds})",
                    "-",
                )
            )
            ratio = mesh / plain
            rows.append(("file ratio mesh / plain", f"{ratio:.0%}", ">= 70%"))
        finally:
            for node in nodes:
                await node.aclose()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':<34}  target")
    print(f"{'-' * width}  {'-' * 34}  ------")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<34}  {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--file-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="file transfers of each kind")
    args = parser.parse_args()
    asyncio.run(main(args.packets, args.file_mib, args.rounds))
