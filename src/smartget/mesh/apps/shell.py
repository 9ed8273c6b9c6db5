"""shell: runs an argv list on this node and replies with exit code and output.

Closed by default (policy.py ``CLOSED_APPS``): only node ids named in the config
(``--allow shell=ID``) may use it, and the sender must be proven. Nothing runs through a
shell: the body is a JSON array of strings (``["ls", "-l", "/tmp"]``) or words split as
a shell would quote them (``ls -l /tmp``), never interpreted (no pipes, globs, $VARS).

The reply carries ``exit: <code>`` and, as its body, stdout then stderr, cut at
``max_output`` bytes; a command running past ``timeout`` seconds is killed
(``exit: timeout``). Settings: ``timeout`` (60), ``max_output`` (1 MiB), ``cwd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex

from smartget.mesh.apps import App, AppContext
from smartget.mesh.datapack import Received

__all__ = ["APP", "ShellApp", "parse_argv"]


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


class ShellApp(App):
    name = "shell"
    closed_by_default = True

    async def run(self, ctx: AppContext) -> None:
        while True:
            dp = await ctx.receive()
            if dp.method in ("post", "get"):
                ctx.spawn(self._execute(ctx, dp))

    async def _execute(self, ctx: AppContext, dp: Received) -> None:
        timeout = float(ctx.settings.get("timeout", 60))
        limit = int(ctx.settings.get("max_output", 1 << 20))
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
            )
        except OSError as exc:
            ctx.send(dp.reply(f"cannot run {argv[0]!r}: {exc.strerror}".encode(), exit="127"))
            return
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            ctx.send(dp.reply(f"killed after {timeout} s".encode(), exit="timeout"))
            return
        ctx.send(dp.reply((out + err)[:limit], exit=str(proc.returncode)))


APP = ShellApp
