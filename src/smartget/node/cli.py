"""``smartget node``: run the edge agent in the foreground."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from smartget.config import (
    common_options,
    config_from,
    options_from,
    refuse_secret_on_command_line,
    setup_logging,
)
from smartget.errors import ConfigError
from smartget.httpserver import HttpLimits
from smartget.lifecycle import on_stop_signals
from smartget.node.fetchpolicy import parse_networks
from smartget.node.settings import NodeSettings

log = logging.getLogger("smartget.node")


def _check_networks(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        parse_networks(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    return value


@click.command()
@click.option("--ip", required=True, help="Address the node advertises; BitTorrent binds to it.")
@click.option("--zone", required=True, help="The node's zone; NodeID is ZONE_IP (seed 003).")
@click.option(
    "--wwwroot",
    "wwwroots",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    multiple=True,
    help="Root of the files the node fetches, makes torrents of, downloads and serves. "
    "Repeat it for more storage roots: a task's args.wwwroot names one of them; the "
    "first is the default, and the file server serves them all as one tree.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the node keeps its state, resume data and generated password.",
)
# The options with defaults come from NodeSettings, where each default and help is.
@options_from(NodeSettings, exclude=("resume_interval", "outgoing_utp"))
@options_from(HttpLimits, prefix="http")
@click.option(
    "--fetch-allow",
    "fetch_allow",
    multiple=True,
    callback=_check_networks,
    help="Network (CIDR or address) the node may fetch from although it is loopback, "
    "link-local or private (repeatable). Without it tasks fetch only from globally "
    "routable addresses, redirects included.",
)
@click.option(
    "--tracker",
    "trackers",
    multiple=True,
    help="Tracker URL for maketorrent when the task names none (repeatable).",
)
@common_options
def node(log_level: str, **options: Any) -> None:
    """Run the edge node in the foreground until SIGINT or SIGTERM.

    Controllers POST seed 003's JSON tasks to the API: /maketorrent, /download,
    /shutdown, /shutdownall, /delete (and /puttask, /shutdowntask), /ping. Every route
    needs ?user=U&pwd=<md5 of the password> or 'Authorization: Bearer TOKEN'; with neither
    configured a password is generated in DATA_DIR/node.password (0600; the log says
    where, never what). Secrets are best given by environment (SMARTGET_NODE_TOKEN,
    SMARTGET_NODE_PASSWORD): a command line is readable by every user of the machine.
    Tasks fetch only from globally routable addresses unless --fetch-allow says more.
    Downloads resume after a restart, even after kill -9.
    """
    setup_logging(log_level)
    refuse_secret_on_command_line("token", "SMARTGET_NODE_TOKEN")
    refuse_secret_on_command_line("password", "SMARTGET_NODE_PASSWORD")
    wwwroot, *extra_roots = options.pop("wwwroots")
    limits = config_from(HttpLimits, options, prefix="http")
    settings = config_from(
        NodeSettings,
        options,
        wwwroot=wwwroot,
        extra_roots=tuple(extra_roots),
        http_limits=limits,
    )
    asyncio.run(_serve(settings))


async def _serve(settings: NodeSettings) -> None:
    from smartget.node.service import running  # loads libtorrent: only when it runs

    async with running(settings) as node:
        on_stop_signals(lambda _: node.stop())
        log.info("node %s ready; stop with Ctrl-C", node.identity.nodeid)
        await node.wait_stopped()
