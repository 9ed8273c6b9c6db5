"""``smartget hub``: run the central server in the foreground.

Every option comes from a field of :class:`~smartget.hub.app.HubSettings` or
:class:`~smartget.hub.relay.service.RelaySettings` (``--relay-*``): default, help and
range are written once, there.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import click

from smartget import native
from smartget.config import (
    common_options,
    config_from,
    options_from,
    refuse_secret_on_command_line,
    setup_logging,
)
from smartget.httpserver import HttpLimits
from smartget.hub.app import HubSettings, running
from smartget.hub.jobs.runner import JobSettings
from smartget.hub.relay.service import RelaySettings
from smartget.lifecycle import on_stop_signals, run_service

log = logging.getLogger("smartget.hub")


@click.command()
@options_from(HubSettings)
@options_from(HttpLimits, prefix="http")
@options_from(RelaySettings, prefix="relay")
@options_from(JobSettings)
@common_options
def hub(log_level: str, **options: Any) -> None:
    """Run the hub in the foreground until SIGINT or SIGTERM.

    Nodes register and heartbeat over the text protocol (`register PORT, `setstatus ID N,
    ...) or the JSON API (/api/nodes); controllers ask for free nodes with
    `requestnodes N or POST /api/nodes/request. On the HTTP port it is also the fleet's
    BitTorrent tracker (/announce, /scrape), the status collector (/report_peerstatus)
    and the co2 relay registry (/RPC2). State is kept in DATA_DIR/hub.sqlite3.
    """
    setup_logging(log_level)
    refuse_secret_on_command_line("token", "SMARTGET_HUB_TOKEN or --token-file")
    relay = config_from(RelaySettings, options, prefix="relay")
    limits = config_from(HttpLimits, options, prefix="http")
    jobs = config_from(JobSettings, options)
    settings = config_from(HubSettings, options, relay=relay, http_limits=limits, jobs=jobs)
    run_service(_serve(settings))


def _tune_gc() -> None:
    """What start-up made stays (frozen out of the collector's scans), and the young
    generation is collected every 50,000 allocations instead of 700: the tracker's
    peers and swarms are many long-lived objects, and with the default thresholds the
    collector walked them again and again under an announce load."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _serve(settings: HubSettings) -> None:
    async with running(settings) as hub:
        _tune_gc()
        on_stop_signals(lambda _: hub.stop())
        log.info(
            "hub ready (tracker core: %s); stop with Ctrl-C",
            "compiled with mypyc" if native.enabled else "pure Python",
        )
        await hub.wait_stopped()
