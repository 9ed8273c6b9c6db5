"""One-shot mesh client for scripts: ``smartget mesh send`` and ``update push``.

It is a node without a listener or apps of its own, linked to one node (``--via``)
with the certificate of NODE_DIR; everything not addressed to ``via`` itself goes
through ``via`` (a default route). It returns once the packet is written and the
replies that came within the timeout are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from smartget.errors import MeshError
from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Datapack, Received
from smartget.mesh.service import running
from smartget.mesh.settings import MeshSettings

__all__ = ["CLIENT_APP", "send_one"]

CLIENT_APP = "send"


class _Inbox(App):
    name = CLIENT_APP

    async def run(self, ctx: AppContext) -> None:
        await asyncio.Event().wait()  # replies wait in ctx.queue for send_one


async def send_one(
    tls_dir: Path,
    via: tuple[str, int],
    to: str,
    app: str,
    body: bytes,
    *,
    method: str = "post",
    head: dict[str, str] | None = None,
    file: Path | None = None,
    filename: str | None = None,
    wait: float = 10.0,
    wait_all: bool = False,
) -> list[Received]:
    """Send one packet through ``via``; return the replies that came within ``wait`` s.

    Raises :class:`MeshError` with the reason when the link cannot be made (refused,
    certificate rejected, no answer) or the packet cannot be written.
    """
    host, port = via
    limit = wait or 10.0
    with tempfile.TemporaryDirectory(prefix="smartget-send-") as tmp:
        settings = MeshSettings(
            tls_dir=tls_dir,
            data_dir=Path(tmp),
            listen=None,
            apps=[],
            extra_apps={CLIENT_APP: _Inbox()},
            heartbeat=3.0,  # well inside any node's idle timeout (3 heartbeats + 10 s)
            dial_learned=False,
            connect_timeout=limit,
        )
        async with running(settings) as node:
            node.dial(host, port)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await node.wait_link_or_failure()
            if not node.links:
                reason = node.last_error or "no answer"
                raise MeshError(f"could not link to {host}:{port} as {node.node_id!r}: {reason}")
            peer, link = next(iter(node.links.items()))
            node.router.default_route = peer
            if to == "*":  # every direct peer of --via, not of this one-link client
                to = f"{peer}&*"
            ctx = node.contexts[CLIENT_APP]
            extra = dict(head or {})
            if file is not None:
                dp = await ctx.send_file(file, to=to, app=app, filename=filename, **extra)
            else:
                dp = ctx.send(Datapack(method, app, {"to": to, **extra}, body))
            try:
                async with asyncio.timeout(limit + (3600.0 if file is not None else 0.0)):
                    await link.wait_flushed()
            except TimeoutError:
                raise MeshError(f"could not write the packet to {host}:{port} in time") from None
            if link.closed.done():
                raise MeshError(f"{host}:{port} closed the link: {node.last_error or 'closed'}")
            replies: list[Received] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(left):
                        reply = await ctx.receive()
                except TimeoutError:
                    break
                if reply.head.get("re") == dp.flag:
                    replies.append(reply)
                    if not wait_all:
                        break
            return replies
