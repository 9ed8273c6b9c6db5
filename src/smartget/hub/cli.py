"""``smartget hub``: run the central server in the foreground."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from smartget.config import HOSTPORT, common_options, setup_logging
from smartget.errors import SmartGetError
from smartget.hub.relay.options import relay_options, relay_settings
from smartget.lifecycle import on_stop_signals

log = logging.getLogger("smartget.hub")


@click.command()
@click.option(
    "--listen",
    type=HOSTPORT,
    default="0.0.0.0:20110",
    show_default=True,
    help="Address of the backtick text protocol (seed 000).",
)
@click.option(
    "--http",
    type=HOSTPORT,
    default="0.0.0.0:8200",
    show_default=True,
    help="Address of the HTTP API, metrics and docs.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the SQLite store and the generated API token live.",
)
@click.option(
    "--node-ttl",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds without setstatus before a node becomes a zombie.",
)
@click.option(
    "--zombie-grace",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Further seconds before a zombie is removed.",
)
@click.option(
    "--token",
    envvar="SMARTGET_HUB_TOKEN",
    default=None,
    help="Bearer token of the JSON API [env SMARTGET_HUB_TOKEN; default: "
    "generated in DATA_DIR/hub.token].",
)
@click.option(
    "--open-tracker",
    is_flag=True,
    help="Track any info-hash at /announce, not only torrents the fleet made or fetches.",
)
@click.option(
    "--tracker-interval",
    type=click.IntRange(5, 3600),
    default=30,
    show_default=True,
    help="Seconds between announces the tracker asks clients for.",
)
@relay_options
@common_options
def hub(
    listen: tuple[str, int],
    http: tuple[str, int],
    data_dir: Path,
    node_ttl: float,
    zombie_grace: float,
    token: str | None,
    open_tracker: bool,
    tracker_interval: int,
    log_level: str,
    **relay: Any,  # --relay-* (hub/relay/options.py)
) -> None:
    """Run the hub in the foreground until SIGINT or SIGTERM.

    Nodes register and heartbeat over the text protocol (`register PORT, `setstatus ID N,
    ...) or the JSON API (/api/nodes); controllers ask for free nodes with
    `requestnodes N or POST /api/nodes/request. On the HTTP port it is also the fleet's
    BitTorrent tracker (/announce, /scrape), the status collector (/report_peerstatus)
    and the co2 relay registry (/RPC2). State is kept in DATA_DIR/hub.sqlite3.
    """
    from smartget.hub.service import HubSettings

    setup_logging(log_level)
    settings = HubSettings(
        data_dir=data_dir,
        listen=listen,
        http=http,
        node_ttl=node_ttl,
        zombie_grace=zombie_grace,
        token=token,
        relay=relay_settings(relay),
        open_tracker=open_tracker,
        tracker_interval=tracker_interval,
    )
    try:
        asyncio.run(_serve(settings))
    except SmartGetError as exc:
        raise click.ClickException(str(exc)) from exc


async def _serve(settings: object) -> None:
    from smartget.hub.service import HubSettings, running

    assert isinstance(settings, HubSettings)
    async with running(settings) as hub:
        on_stop_signals(lambda _: hub.stop())
        log.info("hub ready; stop with Ctrl-C")
        await hub.wait_stopped()
