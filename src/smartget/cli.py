"""The ``smartget`` command: one subcommand (or group) per service.

Each service keeps its own click command in ``smartget/<service>/cli.py``; they are
imported only when used, so ``smartget hub`` never loads libtorrent and ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from smartget import __version__
from smartget.errors import SmartGetError

# name -> (module, attribute, one-line help shown by `smartget --help`)
SERVICES: dict[str, tuple[str, str, str]] = {
    "hub": ("smartget.hub.cli", "hub", "Run the central server: registry, tracker, relay, API."),
    "node": ("smartget.node.cli", "node", "Run the edge agent: task API on libtorrent."),
    "dht": ("smartget.dht.cli", "dht", "Run a BitTorrent Mainline DHT node (BEP 5)."),
    "mesh": ("smartget.mesh.cli", "mesh", "Authenticated overlay messaging (MSW)."),
    "transcode": ("smartget.transcode.cli", "transcode", "Distributed ffmpeg over the mesh."),
    "push": ("smartget.jobs_cli", "push_command", "Push files from their origin to the fleet."),
    "jobs": ("smartget.jobs_cli", "jobs", "Push jobs in the hub: list, show, cancel, follow."),
    "demo": ("smartget.demo", "demo", "Run a hub, nodes and an origin locally and push."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SERVICES if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = SERVICES[name][0]
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SERVICES or not self._available(cmd_name):
            return None
        module_name, attribute, _ = SERVICES[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # The one place where SmartGet's own errors become a clean message and exit
        # status 1 (click's), instead of a traceback: the services just raise.
        try:
            return super().invoke(ctx)
        except SmartGetError as exc:
            raise click.ClickException(str(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SERVICES[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smartget")
def cli() -> None:
    """SmartGet: move large files from an origin to a fleet of edge machines, peer to peer.

    Start with `smartget hub` on the central machine and `smartget node` on each edge
    machine; `smartget push FILEURL` then puts a file on the fleet. Every service takes
    --config FILE (TOML with the same keys as its flags) and --log-level.
    """


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="smartget")
