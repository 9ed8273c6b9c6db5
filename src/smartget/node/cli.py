"""``smartget node``: run the edge agent in the foreground."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from smartget.config import HOSTPORT, RATE, common_options, setup_logging
from smartget.errors import SmartGetError
from smartget.lifecycle import on_stop_signals

log = logging.getLogger("smartget.node")


@click.command()
@click.option("--ip", required=True, help="Address the node advertises; BitTorrent binds to it.")
@click.option("--zone", required=True, help="The node's zone; NodeID is ZONE_IP (seed 003).")
@click.option(
    "--wwwroot",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Root of the files the node fetches, makes torrents of, downloads and serves.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the node keeps its state, resume data and generated password.",
)
@click.option(
    "--api", type=HOSTPORT, default="0.0.0.0:8090", show_default=True, help="Task API address."
)
@click.option(
    "--files",
    type=HOSTPORT,
    default="0.0.0.0:8080",
    show_default=True,
    help="File server address (serves wwwroot, with Range; web seeds need it).",
)
@click.option(
    "--bt-port",
    type=click.IntRange(0, 65535),
    default=6881,
    show_default=True,
    help="BitTorrent listen port (on --ip).",
)
@click.option("--hub", type=HOSTPORT, default=None, help="Hub's text protocol HOST:PORT.")
@click.option(
    "--hub-http",
    default=None,
    help="Hub's JSON API URL, e.g. http://hub:8200 (token: http://:TOKEN@hub:8200 or --token).",
)
@click.option("--report-url", default=None, help="Collector URL for status reports.")
@click.option(
    "--report-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between status reports of a torrent.",
)
@click.option("--user", default=None, help="API user (clients send ?user=U&pwd=md5(P)).")
@click.option(
    "--password",
    envvar="SMARTGET_NODE_PASSWORD",
    default=None,
    help="API password [env SMARTGET_NODE_PASSWORD].",
)
@click.option(
    "--token",
    envvar="SMARTGET_NODE_TOKEN",
    default=None,
    help="API bearer token [env SMARTGET_NODE_TOKEN]; also sent to --hub-http.",
)
@click.option(
    "--tracker",
    "trackers",
    multiple=True,
    help="Tracker URL for maketorrent when the task names none (repeatable).",
)
@click.option(
    "--upload-limit",
    type=RATE,
    default="0",
    show_default=True,
    help="Upload rate limit for all peers, loopback included (e.g. 10MiB/s; 0: none).",
)
@click.option(
    "--download-limit",
    type=RATE,
    default="0",
    show_default=True,
    help="Download rate limit for all peers (0: none).",
)
@click.option(
    "--webseed-fallback",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds a download may go without progress from peers before it also fetches "
    "from the torrent's web seed, the origin (0: from the start).",
)
@click.option(
    "--peer-request-queue",
    type=click.IntRange(1, 2000),
    default=None,
    help="Block requests one peer may queue at this node (N, the reqq it advertises) "
    "[default: 500 without --upload-limit; under one, 8, or what the cap sends in 25 ms "
    "if more: 32 at 20MiB/s]. One connection carries at most N x 16 KiB per round trip "
    "(N = 8: 2.6 MB/s at 50 ms). Under a cap, deeper queues let a peer order more from "
    "the node that others could have given it, so the seed sends more than the file "
    "once; Transmission 3.00 downloads at most N x 16 KiB/s from a node, so a capped "
    "fleet that serves it may want 64 or more.",
)
@common_options
def node(
    ip: str,
    zone: str,
    wwwroot: Path,
    data_dir: Path,
    api: tuple[str, int],
    files: tuple[str, int],
    bt_port: int,
    hub: tuple[str, int] | None,
    hub_http: str | None,
    report_url: str | None,
    report_interval: float,
    user: str | None,
    password: str | None,
    token: str | None,
    trackers: tuple[str, ...],
    upload_limit: int,
    download_limit: int,
    webseed_fallback: float,
    peer_request_queue: int | None,
    log_level: str,
) -> None:
    """Run the edge node in the foreground until SIGINT or SIGTERM.

    Controllers POST seed 003's JSON tasks to the API: /maketorrent, /download,
    /shutdown, /shutdownall, /delete (and /puttask, /shutdowntask), /ping. Every route
    needs ?user=U&pwd=<md5 of the password> or 'Authorization: Bearer TOKEN'; with neither
    configured a password is generated in DATA_DIR/node.password and printed once.
    Downloads resume after a restart, even after kill -9.
    """
    from smartget.node.service import NodeSettings

    setup_logging(log_level)
    settings = NodeSettings(
        ip=ip,
        zone=zone,
        wwwroot=wwwroot,
        data_dir=data_dir,
        api=api,
        files=files,
        bt_port=bt_port,
        hub=hub,
        hub_http=hub_http,
        report_url=report_url,
        report_interval=report_interval,
        user=user,
        password=password,
        token=token,
        trackers=tuple(trackers),
        upload_limit=upload_limit,
        download_limit=download_limit,
        webseed_fallback=webseed_fallback,
        peer_request_queue=peer_request_queue,
    )
    try:
        asyncio.run(_serve(settings))
    except SmartGetError as exc:
        raise click.ClickException(str(exc)) from exc


async def _serve(settings: object) -> None:
    from smartget.node.service import NodeSettings, running

    assert isinstance(settings, NodeSettings)
    async with running(settings) as node:
        on_stop_signals(lambda _: node.stop())
        log.info("node %s ready; stop with Ctrl-C", node.identity.nodeid)
        await node.wait_stopped()
