"""shell: runs an argv list on this node and replies with exit code and output.

Closed by default (policy.py ``CLOSED_APPS``): only node ids named in the config
(``--allow shell=ID``) may use it, and the sender must be proven. Nothing runs through a
shell: the body is a JSON array of strings (``["ls", "-l", "/tmp"]``) or words split as
a shell would quote them (``ls -l /tmp``), never interpreted (no pipes, globs, $VARS).

The reply carries ``exit: <code>`` and, as its body, stdout then stderr, cut at
``max_output`` bytes (``truncated: yes`` when cut). Output is read as it comes and what
is past the cap is discarded on the way, so a command printing gigabytes costs the node
``max_output`` bytes per stream, not the output's size (issue 12, item 12). The command
runs in its own session (process group); past ``timeout`` seconds the whole group is
killed, children it started included (``exit: timeout``). Settings: ``timeout`` (60),
``max_output`` (1 MiB), ``cwd`` (``smartget mesh run --shell-timeout``,
``--shell-max-output``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
from dataclasses import dataclass

from smartget.config import SIZE, setting
from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Received

__all__ = ["APP", "ShellApp", "parse_argv", "read_capped"]

READ_CHUNK = 64 * 1024


def parse_argv(body: bytes) -> list[str]:
    """The argv of a shell packet; ValueError if it is not a non-empty list of strings."""
    text = body.decode("utf-8").strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise ValueError("the JSON body must be an array of strings")
        argv = [str(a) for a in parsed]
    else:
        argv = shlex.split(text)
    if not argv:
        raise ValueError("empty command")
    return argv


async def read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Read ``stream`` to its end keeping at most ``limit`` bytes; (kept, cut)."""
    kept = bytearray()
    cut = False
    while chunk := await stream.read(READ_CHUNK):
        room = limit - len(kept)
        if len(chunk) > room:
            cut = True
            chunk = chunk[: max(room, 0)]
        kept += chunk
    return bytes(kept), cut


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the command's own session: pgid == pid


@dataclass(frozen=True)
class ShellSettings:
    """``app_settings['shell']`` (``smartget mesh run --shell-timeout``, ...)."""

    timeout: float = setting(
        60.0,
        "Seconds a shell command may run before its whole process group is killed.",
        min=0.01,
    )
    max_output: int = setting(
        "1MiB",
        "Bytes of a shell command's output kept for the reply (the rest is discarded).",
        click_type=SIZE,
    )


class ShellApp(App):
    name = "shell"
    closed_by_default = True

    async def run(self, ctx: AppContext) -> None:
        while True:
            dp = await ctx.receive()
            if dp.method in ("post", "get"):
                ctx.spawn(self._execute(ctx, dp))

    async def _execute(self, ctx: AppContext, dp: Received) -> None:
        timeout = float(ctx.settings.get("timeout", ShellSettings.timeout))
        limit = int(ctx.settings.get("max_output", ShellSettings.max_output))
        try:
            argv = parse_argv(dp.body)
        except ValueError as exc:
            ctx.send(dp.reply(f"bad command: {exc}".encode(), exit="error"))
            return
        ctx.log.info("running %s for %s", argv, dp.origin)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ctx.settings.get("cwd"),
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except OSError as exc:
            ctx.send(dp.reply(f"cannot run {argv[0]!r}: {exc.strerror}".encode(), exit="127"))
            return
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                (out, out_cut), (err, err_cut) = await asyncio.gather(
                    read_capped(proc.stdout, limit), read_capped(proc.stderr, limit)
                )
                await proc.wait()
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            ctx.send(dp.reply(f"killed after {timeout} s".encode(), exit="timeout"))
            return
        except BaseException:
            _kill_group(proc)  # the node stops: leave nothing running
            raise
        body = (out + err)[:limit]
        cut = out_cut or err_cut or len(out) + len(err) > limit
        extra = {"truncated": "yes"} if cut else {}
        ctx.send(dp.reply(body, exit=str(proc.returncode), **extra))


APP = ShellApp
