"""``smartget dht``: run a Mainline DHT node, look up or announce an info-hash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from smartget.config import HOSTPORT, common_options, config_from, options_from, setup_logging
from smartget.dht.core import BTDHT_IGNORED_NET, DHTConfig
from smartget.errors import SmartGetError
from smartget.lifecycle import on_stop_signals

if TYPE_CHECKING:
    from smartget.dht.driver import DHT

log = logging.getLogger("smartget.dht")

Addr = tuple[str, int]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _infohash(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise click.BadParameter(f"expected 40 hexadecimal digits (a v1 info-hash), got {value!r}")
    return raw


_bind = click.option(
    "--bind",
    type=HOSTPORT,
    required=True,
    help="IPv4 address and UDP port of this node (port 0: any free port).",
)
_timeout = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Give up after this many seconds (bootstrap included).",
)

_ignore_net = click.option(
    "--ignore-net/--no-ignore-net",
    default=None,
    help="Ignore btdht's private and reserved ranges (10/8, 127/8, 192.168/16, ...). "
    "Default: ignored when bound to 0.0.0.0 or a public address, kept when bound to a "
    "private or loopback one (a fleet there).",
)


def _ignored(ignore_net: bool | None) -> list[str] | None:
    """The DHT's ``ignored_net`` for ``--ignore-net`` (None: its default for the bind)."""
    if ignore_net is None:
        return None
    return list(BTDHT_IGNORED_NET) if ignore_net else []


def _bootstrap_option(required: bool) -> Callable[[F], F]:
    return click.option(
        "--bootstrap",
        type=HOSTPORT,
        multiple=True,
        required=required,
        help="A known DHT node to start from (repeat for several).",
    )


@click.group()
def dht() -> None:
    """A BitTorrent Mainline DHT node (BEP 5), compatible with every real client.

    `run` keeps a node up; `get-peers` and `announce` start a short-lived node, do one
    lookup and exit.
    """


@dht.command()
@_bind
@_bootstrap_option(required=False)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Routing table file (btdht format: 26-byte node records), loaded at start and "
    "saved on exit.",
)
@_ignore_net
@options_from(DHTConfig)  # --rate-limit, --reply-rate, --max-sources
@common_options
def run(
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    state: Path | None,
    ignore_net: bool | None,
    log_level: str,
    **options: Any,
) -> None:
    """Run a DHT node until SIGINT or SIGTERM.

    Without --bootstrap and without a saved table, the node starts from the public
    routers (router.utorrent.com, dht.transmissionbt.com, ...).
    """
    setup_logging(log_level)
    asyncio.run(
        _serve(bind, bootstrap, state, config_from(DHTConfig, options), _ignored(ignore_net))
    )


async def _serve(
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    state: Path | None,
    config: DHTConfig,
    ignored_net: list[str] | None,
) -> None:
    from smartget.dht.driver import DEFAULT_BOOTSTRAP, DHT

    stop = asyncio.Event()
    on_stop_signals(lambda _: stop.set())
    node = DHT(
        bind[0],
        bind[1],
        rate_limit=config.rate_limit,
        reply_rate=config.reply_rate,
        max_sources=config.max_sources,
        ignored_net=ignored_net,
    )
    async with node:
        loaded = node.load(state) if state is not None else 0
        log.info("listening on %s:%d, %d nodes loaded", node.bind_ip, node.bind_port, loaded)
        seeds = list(bootstrap) or ([] if loaded else list(DEFAULT_BOOTSTRAP))
        boot = asyncio.create_task(_join(node, seeds))
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(60):
                        await stop.wait()
                except TimeoutError:
                    stats = node.statistics()
                    log.info(
                        "%d nodes (%d good), %d queries in, %d peers stored",
                        stats["nodes"],
                        stats["good_nodes"],
                        stats.get("queries_in", 0),
                        stats["stored_peers"],
                    )
        finally:
            boot.cancel()
            try:
                await boot
            except (asyncio.CancelledError, SmartGetError) as exc:
                log.debug("bootstrap ended: %r", exc)
            if state is not None:
                saved = node.save(state)
                log.info("saved %d nodes to %s", saved, state)


async def _join(node: DHT, seeds: list[Addr]) -> None:
    """Bootstrap, then fill every bucket at once: bootstrapping looks up our own id
    only, so the far buckets would otherwise wait for their 15-minute refresh, and
    lookups from here could stall short of a target on the other side of the space."""
    await node.bootstrap(seeds)
    log.info("bootstrapped: %d nodes; building the table", len(node.root))
    log.info("table built: %d nodes", await node.build_table())


@dht.command("get-peers")
@click.argument("infohash_hex", metavar="INFOHASH_HEX", callback=_infohash)
@_bind
@_bootstrap_option(required=True)
@_timeout
@_ignore_net
@common_options
def get_peers(
    infohash_hex: bytes,
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    timeout: float,
    ignore_net: bool | None,
    log_level: str,
) -> None:
    """Print every peer of INFOHASH_HEX as ip:port, one a line, as they are found.

    Exits 0 if at least one peer was found, 1 if none.
    """
    setup_logging(log_level)
    found = asyncio.run(_lookup(infohash_hex, bind, bootstrap, timeout, _ignored(ignore_net)))
    sys.exit(0 if found else 1)


@contextlib.asynccontextmanager
async def _joined(
    bind: Addr, bootstrap: tuple[Addr, ...], limit: float, ignored_net: list[str] | None
) -> AsyncIterator[tuple[Any, Callable[[], float]]]:
    """A DHT bound and bootstrapped within ``limit`` s; yields it and the time left."""
    from smartget.dht.driver import DHT

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit

    def left() -> float:
        return max(0.1, deadline - loop.time())

    async with DHT(bind[0], bind[1], ignored_net=ignored_net) as node:
        await node.bootstrap(list(bootstrap), max_wait=left())
        yield node, left


async def _lookup(
    info_hash: bytes,
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    limit: float,
    ignored_net: list[str] | None = None,
) -> int:
    seen: set[Addr] = set()

    def show(peers: list[Addr]) -> None:
        for peer in peers:
            if peer not in seen:
                seen.add(peer)
                click.echo(f"{peer[0]}:{peer[1]}")

    async with _joined(bind, bootstrap, limit, ignored_net) as (node, left):
        await node.get_peers(info_hash, limit=None, callback=show, max_wait=left())
    return len(seen)


@dht.command()
@click.argument("infohash_hex", metavar="INFOHASH_HEX", callback=_infohash)
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port to announce.")
@_bind
@_bootstrap_option(required=True)
@_timeout
@_ignore_net
@common_options
def announce(
    infohash_hex: bytes,
    port: int,
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    timeout: float,
    ignore_net: bool | None,
    log_level: str,
) -> None:
    """Announce that INFOHASH_HEX can be downloaded from this host's --port.

    Exits 0 once at least one node accepted the announce, 1 if none did.
    """
    setup_logging(log_level)
    accepted = asyncio.run(
        _announce(infohash_hex, port, bind, bootstrap, timeout, _ignored(ignore_net))
    )
    click.echo(f"accepted by {accepted} nodes")
    sys.exit(0 if accepted else 1)


async def _announce(
    info_hash: bytes,
    port: int,
    bind: Addr,
    bootstrap: tuple[Addr, ...],
    limit: float,
    ignored_net: list[str] | None = None,
) -> int:
    async with _joined(bind, bootstrap, limit, ignored_net) as (node, left):
        accepted: int = await node.announce_peer(info_hash, port, max_wait=left())
        return accepted
