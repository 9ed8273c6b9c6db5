"""``smartget mesh``: run a node, manage its CA and release key, send packets, supervise."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from smartget.config import (
    DIR,
    FILE,
    HOSTPORT,
    REQUIRED,
    common_options,
    config_from,
    options_from,
    setting,
    setup_logging,
)
from smartget.errors import ConfigError
from smartget.lifecycle import on_stop_signals
from smartget.mesh.apps.shell import ShellSettings
from smartget.mesh.apps.update import UpdateSettings
from smartget.mesh.router import RouterConfig
from smartget.mesh.settings import MeshSettings

log = logging.getLogger("smartget.mesh")


@click.group()
def mesh() -> None:
    """Authenticated overlay messaging (MSW): Datapacks to named apps on named nodes.

    Every node holds a certificate of one private CA; links are mutual TLS 1.3 and a
    node's id is the one in its certificate. Start with `smartget mesh ca init CA_DIR`,
    then `smartget mesh ca issue CA_DIR NODE_ID --out NODE_DIR` for each node, then
    `smartget mesh run --tls-dir NODE_DIR --listen HOST:PORT --peers address.txt`.
    """


# -- run ----------------------------------------------------------------------------


def _parse_allow(values: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    allow: dict[str, list[str]] = {}
    for value in values:
        app, sep, ids = str(value).partition("=")
        if not sep or not app.strip():
            raise click.BadParameter(
                f"expected APP=ID[,ID...], got {value!r}", param_hint="--allow"
            )
        allow.setdefault(app.strip(), []).extend(i.strip() for i in ids.split(",") if i.strip())
    return allow


@dataclass(frozen=True)
class RunOptions:
    """What ``mesh run`` takes on its command line, before it becomes :class:`MeshSettings`."""

    tls_dir: Path = setting(REQUIRED, "NODE_DIR from `mesh ca issue`.", click_type=DIR)
    listen: tuple[str, int] = setting(
        ("0.0.0.0", 20120), "Address to accept links on.", click_type=HOSTPORT
    )
    peers: Path | None = setting(
        None,
        "MSW's address.txt (or addrlist.txt): one host:port a line, dialed and redialed.",
        click_type=FILE,
    )
    app: tuple[str, ...] = setting(
        (),
        "App to run (repeat): logger, console, shell, update, or an installed "
        "smartget.mesh_apps entry point. [default: logger, shell, update]",
        multiple=True,
    )
    apps_dir: Path | None = setting(None, "Also run every app module in DIR.", click_type=DIR)
    data_dir: Path = setting(
        Path("mesh-data"), "Received files (DATA_DIR/recv), log.txt, app data.", click_type=DIR
    )
    id: str | None = setting(None, "Must match the certificate's id if given.")
    allow: tuple[str, ...] = setting(
        (),
        "Node ids that may send to APP (repeat; * = any member). Apps not named are open "
        "to all members; shell and update are closed unless named.",
        multiple=True,
        metavar="APP=ID[,ID]",
    )


@mesh.command()
@options_from(RunOptions)
@options_from(MeshSettings)  # --heartbeat
@options_from(RouterConfig)  # --retry-count, --retry-interval, --max-hops, --dial-learned, ...
@options_from(UpdateSettings)  # --program-dir, --release-pubkey, --release-key
@options_from(ShellSettings, prefix="shell")  # --shell-timeout, --shell-max-output
@common_options
def run(heartbeat: float, log_level: str, **options: Any) -> None:
    """Run a mesh node in the foreground.

    --config FILE takes the same keys as these flags (at the top level or in a [run]
    table), e.g. allow = ["shell=ops"], app = ["logger", "shell"], heartbeat = 10.

    Exits 0 only when an update asks for a restart (so `mesh supervise` restarts it),
    130/143 on SIGINT/SIGTERM.
    """
    from smartget.mesh.ca import load_identity
    from smartget.mesh.settings import DEFAULT_APPS, read_peers_file

    setup_logging(log_level)
    opts = config_from(RunOptions, options)
    routing = config_from(RouterConfig, options)
    shell = config_from(ShellSettings, options, prefix="shell")
    update = config_from(UpdateSettings, options)
    ident = load_identity(opts.tls_dir)
    if opts.id and opts.id != ident.node_id:
        raise ConfigError(f"--id {opts.id!r} does not match the certificate's {ident.node_id!r}")
    settings = MeshSettings(
        tls_dir=opts.tls_dir,
        data_dir=opts.data_dir,
        listen=opts.listen,
        peers=read_peers_file(opts.peers) if opts.peers else [],
        apps=list(opts.app) or list(DEFAULT_APPS),
        apps_dir=opts.apps_dir,
        allow=_parse_allow(opts.allow),
        heartbeat=heartbeat,
        retry_count=routing.retry_count,
        retry_interval=routing.retry_interval,
        max_hops=routing.max_hops,
        dial_learned=routing.dial_learned,
        retry_max_packets=routing.retry_max_packets,
        retry_max_bytes=routing.retry_max_bytes,
        max_addresses=routing.max_addresses,
        address_ttl=routing.address_ttl,
        app_settings={"shell": dataclasses.asdict(shell), "update": update.app_settings()},
    )
    status = asyncio.run(_serve(settings))
    sys.exit(status)


async def _serve(settings: Any) -> int:
    from smartget.mesh.service import running

    got: list[int] = []
    async with running(settings) as node:

        def on_signal(signum: int) -> None:
            got.append(signum)
            node.stop()

        on_stop_signals(on_signal)
        await node.wait_stopped()
        if node.restart_requested and not got:
            log.info("restarting for an update")
            return 0
    return 128 + (got[0] if got else signal.SIGTERM)


# -- ca, release-key --------------------------------------------------------------


@mesh.group()
def ca() -> None:
    """The private certificate authority that admits nodes to the mesh."""


@ca.command("init")
@click.argument("ca_dir", type=DIR)
@click.option("--name", default="SmartGet mesh CA", show_default=True, help="The CA's name.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every node must be reissued).")
def ca_init(ca_dir: Path, name: str, force: bool) -> None:
    """Create CA_DIR/ca.crt and CA_DIR/ca.key (keep ca.key off the nodes)."""
    from smartget.mesh.ca import init_ca

    click.echo(init_ca(ca_dir, name, force=force))


@ca.command("issue")
@click.argument("ca_dir", type=DIR)
@click.argument("node_id")
@click.option("--out", "out_dir", type=DIR, required=True, help="NODE_DIR to write into.")
@click.option("--days", type=click.IntRange(min=1), default=825, show_default=True)
def ca_issue(ca_dir: Path, node_id: str, out_dir: Path, days: int) -> None:
    """Write NODE_DIR/ca.crt, node.crt and node.key for NODE_ID (never the CA's key)."""
    from smartget.mesh.ca import issue_node

    click.echo(issue_node(ca_dir, node_id, out_dir, days=days))


@mesh.group("release-key")
def release_key() -> None:
    """The Ed25519 key that signs code updates."""


@release_key.command("init")
@click.argument("out_dir", type=DIR)
@click.option("--force", is_flag=True, help="Replace an existing key.")
def release_key_init(out_dir: Path, force: bool) -> None:
    """Write OUT_DIR/release.key (keep it safe) and OUT_DIR/release.pub (give to nodes)."""
    from smartget.mesh.ca import init_release_key

    key, pub = init_release_key(out_dir, force=force)
    click.echo(f"{key}\n{pub}")


# -- send, update push ----------------------------------------------------------------


def _parse_heads(values: tuple[str, ...]) -> dict[str, str]:
    head = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected k=v, got {value!r}", param_hint="--head")
        head[key] = text
    return head


_CLIENT_OPTIONS = [
    click.option("--tls-dir", type=DIR, required=True, help="NODE_DIR whose certificate we use."),
    click.option("--via", type=HOSTPORT, required=True, help="The node to connect to."),
    click.option("--to", "to", required=True, help="Node id, a&b&c hops, or * (via's peers)."),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the link and for a reply (0: send, do not wait for one).",
    ),
]


def _client_options(func: Any) -> Any:
    for option in reversed(_CLIENT_OPTIONS):
        func = option(func)
    return func


@mesh.command()
@_client_options
@click.option("--app", required=True, help="App to deliver to on the destination.")
@click.option(
    "--method",
    type=click.Choice(["post", "get"]),
    default="post",
    show_default=True,
    help="Datapack method (file is implied by --file).",
)
@click.option("--head", "heads", multiple=True, metavar="K=V", help="Extra header (repeat).")
@click.option("--file", "file_path", type=FILE, default=None, help="Stream this file instead.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
@click.argument("body", required=False, default="")
def send(
    tls_dir: Path,
    via: tuple[str, int],
    to: str,
    timeout: float,
    app: str,
    method: str,
    heads: tuple[str, ...],
    file_path: Path | None,
    log_level: str,
    body: str,
) -> None:
    """Send one Datapack through the node at --via and print the reply, if any.

    Exits 0 once the Datapack is handed to the mesh (a reply is printed if one comes
    within --timeout); non-zero with the reason when the link or certificate is refused.
    The packet is signed with NODE_DIR's key, so apps opened with --allow to this
    certificate's id accept it through any number of proxies. Examples:

    \b
      smartget mesh send --tls-dir ops/ --via 10.0.0.5:20120 --to beta --app shell -- df -h
      smartget mesh send --tls-dir ops/ --via 10.0.0.5:20120 --to '*' --app logger hello
      smartget mesh send --tls-dir ops/ --via 10.0.0.5:20120 --to beta&gamma \\
          --app logger --file report.txt --timeout 0
    """
    from smartget.mesh.client import send_one

    setup_logging(log_level)
    replies = asyncio.run(
        send_one(
            tls_dir,
            via,
            to,
            app,
            body.encode(),
            method=method,
            head=_parse_heads(heads),
            file=file_path,
            wait=timeout,
        )
    )
    for reply in replies:
        extra = " ".join(f"{k}={v}" for k, v in reply.head.items() if k not in ("sig", "cert"))
        click.echo(f"# reply from {reply.head.get('id', '?')}: {extra}", err=True)
        click.echo(reply.body.decode("utf-8", "replace"))


@mesh.group()
def update() -> None:
    """Signed code updates of the program directory."""


@update.command("push")
@_client_options
@click.option("--release-key", type=FILE, required=True, help="release.key from release-key init.")
@click.option("--program-dir", type=DIR, required=True, help="Directory to pack.")
@click.option("--version", "version", required=True, help="Dotted version, newer than the nodes'.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def update_push(
    tls_dir: Path,
    via: tuple[str, int],
    to: str,
    timeout: float,
    release_key: Path,
    program_dir: Path,
    version: str,
    log_level: str,
) -> None:
    """Pack PROGRAM_DIR at VERSION, sign it, and send it to the update app of --to."""
    from smartget.mesh.apps.update import pack
    from smartget.mesh.ca import load_private_key
    from smartget.mesh.client import send_one

    setup_logging(log_level)
    key = load_private_key(release_key)
    with tempfile.TemporaryDirectory(prefix="smartget-update-") as tmp:
        package = pack(program_dir, version, key, Path(tmp) / f"update-{version}.tar.gz")
        replies = asyncio.run(
            send_one(
                tls_dir,
                via,
                to,
                "update",
                b"",
                file=package,
                wait=timeout,
                filename=package.name,
                wait_all=to == "*",
            )
        )
    for reply in replies:
        click.echo(f"{reply.head.get('id', '?')}: {reply.body.decode('utf-8', 'replace')}")


# -- supervise ----------------------------------------------------------------------


@mesh.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to wait before a restart.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(delay: float, command: tuple[str, ...]) -> None:
    """Run COMMAND (after --) and restart it whenever it exits 0, as MSW's main.py.

    Any other exit status stops supervision with that status. Example:
    smartget mesh supervise -- smartget mesh run --tls-dir node ...
    """
    from smartget.mesh.supervisor import supervise as run_supervised

    setup_logging("info")
    sys.exit(run_supervised(command, delay=delay))
