"""The job client: ``smartget push`` submits a job to the hub and follows it;
``smartget jobs list|show|cancel|follow``.

A push job lives in the hub (hub/jobs/): the controller only submits it
(``POST /api/jobs``) and follows its events (``GET /api/jobs/{id}/events``, a long-poll)
and its state (``GET /api/jobs/{id}``). Ctrl-C detaches (the job goes on) unless
``--cancel-on-exit``. The closing table is :func:`smartget.push.render`'s, one per file,
with where each node's bytes came from.

Exit status (``push``, ``jobs follow``): 0 when the job is ``done`` (every node holds
every file, verified), 1 otherwise (``partial``, ``failed``, ``cancelled``: the message
names the job's state and each failed node with its reason), 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from smartget.config import (
    config_from,
    from_environment_only,
    options_from,
    setting,
    setup_logging,
)
from smartget.errors import HubUnreachableError, PushError, SmartGetError
from smartget.push import (
    FleetClient,
    FleetNode,
    NodeOutcome,
    PushResult,
    progress_bars,
    render,
)

__all__ = [
    "follow_job",
    "job_results",
    "jobs",
    "read_manifest",
    "render_job",
    "run_job",
    "submit_job",
]

FINAL = ("done", "partial", "failed", "cancelled")
EVENTS_WAIT = 1.0  # seconds one long-poll of events may wait
HUB_GRACE = 120.0  # seconds a follower keeps asking while no hub answers


def read_manifest(path: Path) -> list[dict[str, str]]:
    """A manifest: one ``URL [SHA256]`` a line; blank lines and ``#`` comments skipped."""
    files = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise PushError(f"{path}:{number}: expected 'URL [SHA256]', got {line[:80]!r}")
        files.append({"url": words[0], "sha256": words[1].lower() if len(words) > 1 else ""})
    if not files:
        raise PushError(f"{path} lists no URL")
    return files


async def submit_job(client: FleetClient, body: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = await client.hub("POST", "/api/jobs", json=body)
    return job


async def follow_job(
    client: FleetClient,
    job_id: str,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    within: float = 86400.0,
    on_hub_lost: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Follow a job until it ends (or ``within`` s pass); its last view.

    The job runs in the hub, not here: while no hub answers, keep asking (1 s, 2 s ...
    apart) for up to ``HUB_GRACE`` s, saying so through ``on_hub_lost``, then give up.
    """
    deadline = time.monotonic() + within
    seq = 0
    lost_since: float | None = None
    delay = 1.0
    while True:
        try:
            news = await client.hub(
                "GET", f"/api/jobs/{job_id}/events", params={"after": seq, "wait": EVENTS_WAIT}
            )
            view: dict[str, Any] = await client.hub("GET", f"/api/jobs/{job_id}")
        except HubUnreachableError as exc:
            now = time.monotonic()
            lost_since = now if lost_since is None else lost_since
            if now - lost_since > HUB_GRACE or now > deadline:
                raise HubUnreachableError(
                    f"no hub answered for {now - lost_since:.0f} s; job {job_id} may go on in "
                    f"the hub (`smartget jobs follow {job_id}`): {exc}"
                ) from exc
            if on_hub_lost is not None:
                on_hub_lost(f"hub unreachable ({exc}); retrying in {delay:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
            continue
        if lost_since is not None and on_hub_lost is not None:
            on_hub_lost(f"hub {client.hub_url} answers again")
        lost_since, delay = None, 1.0
        seq = int(news["last_seq"])
        if on_update is not None:
            on_update(view)
        if view["state"] in FINAL:
            return view
        if time.monotonic() > deadline:
            raise PushError(f"job {job_id} still {view['state']} after {within:.0f} s")


def job_results(view: dict[str, Any]) -> list[PushResult]:
    """The job as one :class:`PushResult` per file (for :func:`smartget.push.render`)."""
    results = []
    for index, f in enumerate(view["files"]):
        result = PushResult(f["url"], sha1=f["sha1"], filesize=f["filesize"])
        result.origin_bytes = f.get("origin_bytes")
        result.striped = bool(f.get("striped"))
        for n in view["nodes"]:
            copy = n["files"][index]
            node = FleetNode(n["node_id"], n["ip"], n["zone"], 0, "", "")
            outcome = NodeOutcome(node, n["role"], percent=copy["percent"])
            if copy["state"] in ("complete", "verifying", "done"):
                outcome.done_at = copy["done_at"]
            if copy["state"] in ("failed", "cancelled"):
                outcome.error = copy["reason"] or copy["state"]
            outcome.verified = copy["verified"]
            result.outcomes.append(outcome)
        result.makespan = max((o.done_at or 0.0) for o in result.outcomes) if result.outcomes else 0
        # Stripes and web seeds count too: the origin's own count covers the making only.
        from_origin = sum(n["files"][index]["bytes"]["origin"] for n in view["nodes"])
        if result.origin_bytes is not None:
            result.origin_bytes = max(result.origin_bytes, from_origin)
        results.append(result)
    return results


def render_job(view: dict[str, Any], caps: dict[str, tuple[float, float]] | None = None) -> Any:
    """The closing tables: one per file, then the nodes' bytes by source."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [render(r, caps) for r in job_results(view)]
    table = Table(title=f"job {view['id']}: {view['state']}", title_justify="left")
    for column in ("node", "zone", "state", "origin", "peers same zone", "peers other zone"):
        table.add_column(column, justify="left" if column in ("node", "zone", "state") else "right")
    table.add_column("reason")
    for n in view["nodes"]:
        b = n["bytes"]
        table.add_row(
            n["nodeid"],
            n["zone"],
            n["state"],
            f"{b['origin']:,}",
            f"{b['peer_same_zone']:,}",
            f"{b['peer_other_zone']:,}",
            n["reason"],
        )
    parts.append(table)
    if view.get("reason"):
        parts.append(Text(f"{view['state']}: {view['reason']}"))
    return Group(*parts)


def failure_message(view: dict[str, Any]) -> str:
    failed = [n for n in view["nodes"] if n["state"] != "done"]
    names = ", ".join(f"{n['nodeid']} ({n['reason'] or n['state']})" for n in failed)
    if not view["nodes"]:
        names = view.get("reason", "")
    return f"push incomplete: job {view['id']} ended {view['state']}; failed: {names}"


def run_job(
    client_args: tuple[Sequence[str], str],
    *,
    body: dict[str, Any] | None = None,
    job_id: str | None = None,
    cancel_on_exit: bool = False,
    within: float = 86400.0,
    caps: dict[str, tuple[float, float]] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Submit (``body``) or attach to (``job_id``) a job; bars per node, then the tables.

    Ctrl-C detaches (or cancels, with ``cancel_on_exit``) and exits 130.
    """
    from rich.console import Console
    from rich.progress import Progress

    hub_url, token = client_args
    console = Console(stderr=True)
    ids: list[str] = [job_id] if job_id else []
    bars: dict[str, Any] = {}

    async def main(progress: Progress | None) -> dict[str, Any]:
        client = FleetClient(hub_url, token, token, 60)
        try:
            if not ids:
                assert body is not None
                job = await submit_job(client, body)
                ids.append(job["id"])
                console.print(f"job {job['id']} queued in the hub ({client.hub_url})")

            def update(view: dict[str, Any]) -> None:
                if progress is None:
                    return
                for n in view["nodes"]:
                    bar = bars.get(n["nodeid"])
                    if bar is None:
                        bar = bars[n["nodeid"]] = progress.add_task(
                            f"{n['nodeid']} ({n['role']})", total=100, state=""
                        )
                    copies = n["files"]
                    percent = sum(c["percent"] for c in copies) / max(1, len(copies))
                    state = n["state"] if n["state"] not in ("queued", "running") else ""
                    progress.update(bar, completed=percent, state=state)

            def lost(message: str) -> None:
                console.print(message)

            return await follow_job(client, ids[0], update, within, on_hub_lost=lost)
        finally:
            await client.aclose()

    try:
        if quiet:
            view = asyncio.run(main(None))
        else:
            with progress_bars(console) as progress:
                view = asyncio.run(main(progress))
    except KeyboardInterrupt:
        if ids and cancel_on_exit:
            asyncio.run(_cancel(hub_url, token, ids[0]))
            console.print(f"job {ids[0]} cancelled")
        elif ids:
            console.print(
                f"detached: job {ids[0]} goes on in the hub; "
                f"`smartget jobs follow {ids[0]}` follows it again"
            )
        raise click.exceptions.Exit(130) from None
    except SmartGetError as exc:
        raise click.ClickException(str(exc)) from exc
    Console().print(render_job(view, caps))
    return view


async def _cancel(hub_url: Sequence[str], token: str, job_id: str) -> dict[str, Any]:
    client = FleetClient(hub_url, token, token, 30)
    try:
        view: dict[str, Any] = await client.hub("POST", f"/api/jobs/{job_id}/cancel")
        return view
    finally:
        await client.aclose()


async def _get(hub_url: Sequence[str], token: str, path: str, **params: Any) -> Any:
    client = FleetClient(hub_url, token, token, 30)
    try:
        return await client.hub("GET", path, params=params or None)
    finally:
        await client.aclose()


# -- smartget jobs ------------------------------------------------------------------------

hub_option = click.option(
    "--hub-http",
    multiple=True,
    default=("http://127.0.0.1:8200",),
    show_default=True,
    help="The hub's HTTP API. Repeat it for the hubs of one fleet (on one Redis): the "
    "next is used when one stops answering.",
)
token_option = click.option(
    "--token",
    envvar="SMARTGET_HUB_TOKEN",
    required=True,
    callback=from_environment_only,
    help="The hub's API token, by environment only: SMARTGET_HUB_TOKEN (a command line "
    "is readable by every user).",
)


@click.group("jobs")
def jobs() -> None:
    """Push jobs in the hub: list, show, cancel, follow."""


@jobs.command("list")
@hub_option
@token_option
@click.option("--state", default=None, help="Only jobs in this state.")
def list_command(hub_http: tuple[str, ...], token: str, state: str | None) -> None:
    """The hub's jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    params = {"state": state} if state else {}
    rows = asyncio.run(_get(hub_http, token, "/api/jobs", **params))
    table = Table()
    for column in ("id", "state", "priority", "created", "files", "nodes", "copies done", "reason"):
        table.add_column(column)
    for j in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["created_at"]))
        table.add_row(
            j["id"],
            j["state"],
            str(j["priority"]),
            created,
            str(j["files"]),
            str(j["nodes"]),
            f"{j['copies_done']}/{j['copies']}",
            j["reason"][:80],
        )
    Console().print(table)


@jobs.command("show")
@click.argument("job_id")
@hub_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="The job as the hub's JSON.")
def show_command(job_id: str, hub_http: tuple[str, ...], token: str, as_json: bool) -> None:
    """One job: its files, and per node its state, reason and bytes by source."""
    from rich.console import Console

    view = asyncio.run(_get(hub_http, token, f"/api/jobs/{job_id}"))
    if as_json:
        import json

        click.echo(json.dumps(view, indent=2))
        return
    Console().print(render_job(view))


@jobs.command("cancel")
@click.argument("job_id")
@hub_option
@token_option
def cancel_command(job_id: str, hub_http: tuple[str, ...], token: str) -> None:
    """Cancel a job: downloads not done are stopped on every node."""
    view = asyncio.run(_cancel(hub_http, token, job_id))
    click.echo(f"job {job_id}: {view['state']}")


@jobs.command("follow")
@click.argument("job_id")
@hub_option
@token_option
@click.option("--cancel-on-exit", is_flag=True, help="Ctrl-C cancels the job (default: detach).")
def follow_command(
    job_id: str, hub_http: tuple[str, ...], token: str, cancel_on_exit: bool
) -> None:
    """Follow a job with progress bars until it ends; exit status as `smartget push`."""
    view = run_job((hub_http, token), job_id=job_id, cancel_on_exit=cancel_on_exit)
    if view["state"] != "done":
        raise click.ClickException(failure_message(view))


@dataclass(frozen=True)
class PushOptions:
    """What ``smartget push`` asks of the job it submits (``POST /api/jobs``)."""

    manifest: Path | None = setting(
        None,
        "A file of URLs, one a line, each optionally followed by its SHA-256.",
        click_type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )
    zones: tuple[str, ...] = setting(
        (), "Only nodes in this zone (repeatable).", flag="--zone", multiple=True
    )
    nodes: int | None = setting(
        None,
        "How many nodes get the files, the seed included [default: all].",
        click_type=click.IntRange(min=1),
    )
    timeout: float = setting(
        600, "The job's deadline: seconds before it gives up on nodes not done.", min=1
    )
    priority: int = setting(0, "Higher runs first.", click_type=int)
    seed: str = setting(
        "", "The seed's nodeid or IP [default: most free capacity].", show_default=False
    )
    cancel_on_exit: bool = setting(False, "Ctrl-C cancels the job (default: detach; it goes on).")
    whole: bool = setting(
        False,
        "The seed fetches each whole file before the others start (default: every node "
        "fetches its own stripe from the origin at once, and they trade the rest).",
    )

    def job_body(self, files: list[dict[str, str]]) -> dict[str, Any]:
        """The hub's job request for ``files``."""
        body: dict[str, Any] = {
            "files": files,
            "zones": list(self.zones),
            "deadline": self.timeout,
            "priority": self.priority,
            "seed": self.seed,
            "striped": not self.whole,
        }
        if self.nodes is not None:
            body["nodes"] = self.nodes
        return body


@click.command("push")
@click.argument("fileurls", nargs=-1)
@hub_option
@token_option
@options_from(PushOptions)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def push_command(
    fileurls: tuple[str, ...], hub_http: tuple[str, ...], token: str, log_level: str, **options: Any
) -> None:
    """Put FILEURLS on the fleet as a job of the hub: each node fetches its own stripe of
    each file from the origin, and they trade the rest peer to peer (the origin sends each
    byte once); every copy is checked by SHA-256.

    Exits 0 only when every chosen node holds every file with the right hash; otherwise
    names the job's state and the nodes that failed, with why. Ctrl-C detaches: the job
    goes on in the hub (`smartget jobs follow ID`).
    """
    setup_logging(log_level)
    push = config_from(PushOptions, options)
    files = [{"url": u, "sha256": ""} for u in fileurls]
    if push.manifest is not None:
        files += read_manifest(push.manifest)
    if not files:
        raise click.UsageError("give at least one FILEURL or --manifest FILE")
    view = run_job(
        (hub_http, token),
        body=push.job_body(files),
        cancel_on_exit=push.cancel_on_exit,
        within=push.timeout + 120,
    )
    if view["state"] != "done":
        raise click.ClickException(failure_message(view))
