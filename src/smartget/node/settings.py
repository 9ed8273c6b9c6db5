"""The node's settings, each default and help text written once.

:class:`EngineSettings` is what the libtorrent engine takes; :class:`NodeSettings` is
everything ``smartget node`` takes. A field made with :func:`smartget.config.setting`
carries its default, ``--help`` text and range: ``smartget node``'s options are made
from :class:`NodeSettings` (:func:`smartget.config.options_from`), and the fields the
node shares with the engine are copied from :class:`EngineSettings` (:func:`_engine`),
so neither a default nor a help text is written twice.

Pure data: importing this module loads neither libtorrent nor asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from smartget.config import HOSTPORT, RATE, SIZE, setting

if TYPE_CHECKING:
    from smartget.httpserver import HttpLimits  # loads uvicorn: not at run time here

__all__ = ["HUB_DHT_PORT", "EngineSettings", "NodeSettings"]

HUB_DHT_PORT = 20110  # the hub's DHT: UDP on its text protocol's default port


@dataclass(frozen=True)
class EngineSettings:
    """What :class:`smartget.node.engine.Engine` takes."""

    ip: str = "0.0.0.0"
    bt_port: int = setting(6881, "BitTorrent listen port (on --ip).", min=0, max=65535)
    upload_limit: int = setting(
        0,
        "Upload rate limit for all peers, loopback included (e.g. 10MiB/s; 0: none).",
        click_type=RATE,
    )
    download_limit: int = setting(
        0, "Download rate limit for all peers (0: none).", click_type=RATE
    )
    outgoing_utp: bool = setting(False, "Dial peers over uTP too (it costs seconds against TCP).")
    resume_interval: float = setting(
        5.0, "Seconds between saves of changed torrents' resume data.", min=0.1
    )
    unchoke_slots: int = 8  # upload slots, reported to the hub as free capacity
    # The fleet should fetch from each other, so the origin sends each byte about once
    # (DESIGN.md); see policy.WebSeedHolds.
    webseed_fallback: float = setting(
        10.0,
        "Seconds a download may go without progress from peers before it also fetches "
        "from the torrent's web seed, the origin (0: from the start).",
        min=0,
    )
    # The fleet's DHT (issue 14): libtorrent's, on the BitTorrent port (UDP).
    dht: bool = setting(
        True,
        "Take part in the fleet's DHT (libtorrent's, on --bt-port over UDP): peers are "
        "found without the hub's tracker.",
        flag="--dht/--no-dht",
    )
    dht_bootstrap: tuple[tuple[str, int], ...] = setting(
        (),
        "A DHT node of the fleet to join through (HOST:PORT, UDP; repeatable): the hub's "
        "(`smartget hub --dht`), a `smartget dht run`, another node's --bt-port "
        "[default: the hub's DHT, on the address and port of --hub, or the host of "
        "--hub-http and port 20110]. Never the public DHT's routers.",
        click_type=HOSTPORT,
        multiple=True,
    )
    # libtorrent's aio_threads (its default 10): each idle thread is woken for disk jobs
    # and costs futex calls; at N = 32 on two cores, 10 took 15 ms/s of each node's CPU.
    disk_threads: int = setting(
        2,
        "libtorrent's disk I/O threads. Two keep up with 20 MiB/s and more on one disk "
        "and cost the least CPU; raise it for many slow disks.",
        click_type=click.IntRange(1, 64),
    )
    # None: policy.REQUEST_QUEUE, or more under a high upload cap (policy.request_queue_for).
    peer_request_queue: int | None = setting(
        None,
        "Block requests one peer may queue at this node (N, the reqq it advertises) "
        "[default: 500 without --upload-limit; under one, 8, or what the cap sends in 25 ms "
        "if more: 32 at 20MiB/s]. One connection carries at most N x 16 KiB per round trip "
        "(N = 8: 2.6 MB/s at 50 ms). Under a cap, deeper queues let a peer order more from "
        "the node that others could have given it, so the seed sends more than the file "
        "once; Transmission 3.00 downloads at most N x 16 KiB/s from a node, so a capped "
        "fleet that serves it may want 64 or more.",
        click_type=click.IntRange(1, 2000),
        show_default=False,
    )


def _engine(name: str) -> Any:
    """The field ``name`` of :class:`EngineSettings` again: the same default and help."""
    (same,) = [f for f in fields(EngineSettings) if f.name == name]
    return field(default=same.default, metadata=same.metadata)


@dataclass
class NodeSettings:
    """Everything ``smartget node`` takes (and a few knobs only tests and libraries set)."""

    ip: str
    zone: str
    wwwroot: Path
    data_dir: Path
    api: tuple[str, int] = setting(("0.0.0.0", 8090), "Task API address.", click_type=HOSTPORT)
    files: tuple[str, int] = setting(
        ("0.0.0.0", 8080),
        "File server address (serves wwwroot, with Range; web seeds need it).",
        click_type=HOSTPORT,
    )
    bt_port: int = _engine("bt_port")
    hub: tuple[tuple[str, int], ...] = setting(
        (),
        "Hub's text protocol HOST:PORT. Repeat it for the hubs of one fleet (on one "
        "Redis): the next is used when one stops answering.",
        click_type=HOSTPORT,
        multiple=True,
        show_default=False,
    )
    hub_http: tuple[str, ...] = setting(
        (),
        "Hub's JSON API URL, e.g. http://hub:8200 (token: http://:TOKEN@hub:8200 or "
        "--token); repeatable, like --hub. Chosen over --hub when both are given.",
        multiple=True,
        show_default=False,
    )
    report_url: tuple[str, ...] = setting(
        (),
        "Collector URL for status reports; repeatable, like --hub.",
        multiple=True,
        show_default=False,
    )
    report_interval: float = setting(30.0, "Seconds between status reports of a torrent.", min=0.1)
    user: str | None = setting(
        None, "API user (clients send ?user=U&pwd=md5(P)).", show_default=False
    )
    password: str | None = setting(
        None,
        "API password, by environment only: SMARTGET_NODE_PASSWORD.",
        envvar="SMARTGET_NODE_PASSWORD",
        show_default=False,
    )
    token: str | None = setting(
        None,
        "API bearer token, by environment only: SMARTGET_NODE_TOKEN; also sent to --hub-http.",
        envvar="SMARTGET_NODE_TOKEN",
        show_default=False,
    )
    trackers: tuple[str, ...] = ()
    # What the node fetches for tasks (issue 12, item 5; smartget.node.fetchpolicy).
    fetch_allow: tuple[str, ...] = ()  # networks beyond the global ones (--fetch-allow)
    fetch_max_size: int = setting(
        64 << 30,
        "Largest file a task may fetch; a longer body is cut off and the task fails.",
        click_type=SIZE,
        show_default="64GiB",
    )
    fetch_timeout: float = setting(
        3600.0,
        "Seconds one fetch may take in all, its retries included (raise it for files "
        "that take longer over the origin's link).",
        min=1,
    )
    # Caches that clean themselves (issue 15; smartget.node.cache).
    cache_max: int = setting(
        0,
        "Most bytes of completed downloads and maketorrents the node keeps: past it, the "
        "least recently used completed torrents that no running download and no pin "
        "(a task's args.pin) holds are removed, data and .torrent, down to --cache-low "
        "(0: never).",
        click_type=SIZE,
    )
    cache_low: int | None = setting(
        None,
        "The low watermark eviction goes down to (at most --cache-max).",
        click_type=SIZE,
        show_default="90% of --cache-max",
    )
    # The API's and the file server's connection limits (--http-*; None: the defaults).
    http_limits: HttpLimits | None = None
    upload_limit: int = _engine("upload_limit")
    download_limit: int = _engine("download_limit")
    extra_roots: tuple[Path, ...] = ()  # more storage roots: --wwwroot given again
    heartbeat: float = 20.0  # seconds between heartbeats to the hub
    resume_interval: float = _engine("resume_interval")
    outgoing_utp: bool = _engine("outgoing_utp")
    webseed_fallback: float = _engine("webseed_fallback")
    peer_request_queue: int | None = _engine("peer_request_queue")
    disk_threads: int = _engine("disk_threads")
    dht: bool = _engine("dht")
    dht_bootstrap: tuple[tuple[str, int], ...] = _engine("dht_bootstrap")
    name: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def engine_settings(self) -> EngineSettings:
        """The engine's part of these settings (the DHT's default bootstrap filled in)."""
        shared = {f.name for f in fields(EngineSettings)} & {f.name for f in fields(self)}
        values = {name: getattr(self, name) for name in shared}
        values["dht_bootstrap"] = self.dht_bootstrap_nodes()
        return EngineSettings(**values)

    def dht_bootstrap_nodes(self) -> tuple[tuple[str, int], ...]:
        """--dht-bootstrap, or the hub's DHT when the hub is known (else none).

        The hub's DHT listens on the address and port of its text protocol (``smartget
        hub --listen``, 20110 unless changed): --hub names both; --hub-http only the
        host, so the port is the default one.
        """
        if self.dht_bootstrap:
            return self.dht_bootstrap
        if self.hub:
            return self.hub
        hosts = [urlsplit(url).hostname for url in self.hub_http]
        return tuple(dict.fromkeys((host, HUB_DHT_PORT) for host in hosts if host))
