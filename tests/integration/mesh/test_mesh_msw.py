"""Issue 17, MSW: original plugins run unchanged, and the console's update commands work.

The plugins below are written as heimoshuiyu/msw's own (plugins/shell.py, log.py,
update.py): module-level queue lookups, a daemon thread on a blocking ``get()``, a
mutable Datapack, ``send_queue.put``. They are loaded from --apps-dir as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from smartget.mesh import Datapack, Node
from smartget.mesh.ca import init_release_key
from tests.helpers import wait_until, wait_until_sync
from tests.integration.mesh.attack import MeshProcs
from tests.integration.mesh.conftest import Probe, fast

# As MSW's plugins are written (imports, __name__, thread), unchanged.
ECHO = """\
import threading
from mswp import Datapack
from forwarder import receive_queues, send_queue
from config import msw_queue
from config import dprint as print
receive_queue = receive_queues[__name__]


def main():
    while True:
        dp = receive_queue.get()
        if dp.method == 'post' and dp.body == b'restart':
            msw_queue.put(0)
        elif dp.method == 'post' and dp.body == b'file':
            ndp = Datapack(head={'from': __name__})
            ndp.method = 'file'
            ndp.app = 'probe'
            ndp.head['to'] = dp.head['id']
            ndp.head['filename'] = FILENAME
            send_queue.put(ndp)
        elif dp.method == 'post':
            print('echo %s' % dp.body.decode(), dp)
            ndp = dp.reply()
            ndp.body = dp.body.upper()
            send_queue.put(ndp)


thread = threading.Thread(target=main, args=(), daemon=True)
thread.start()
"""

# The seed's own example ("编写第一个插件"), with its two typos fixed ('=' for ':' and
# '==' in Python) and the seed's spelling recive_queues kept.
SEED_EXAMPLE = """\
import threading
from forwarder import recive_queues, send_queue
from mswp import Datapack
recive_queue = recive_queues[__name__]

def main():
    while True:
        dp = recive_queue.get()
        if dp.method == 'post':
            ndp = dp.reply()
            ndp.body = 'recived'.encode()
            send_queue.put(ndp)
        else:
            dp = Datapack(head={'from': __name__})
            dp.head['to'] = 'hmsy'
            send_queue.put(dp)

thread = threading.Thread(target=main, args=(), daemon=True)
thread.start()
"""

# Only its import lines changed.
CHANGED_IMPORT = ECHO.replace(
    "from mswp import Datapack\nfrom forwarder import receive_queues, send_queue\n"
    "from config import msw_queue\nfrom config import dprint as print\n",
    "from smartget.mesh.msw import Datapack, receive_queues, send_queue, msw_queue\n"
    "from smartget.mesh.msw import dprint as print\n",
)


@pytest_asyncio.fixture
async def pair(
    pki: Callable[[str], Path], tmp_path: Path
) -> AsyncIterator[tuple[Node, Node, Probe, Path]]:
    """a (a probe) linked to b (MSW plugins in b's --apps-dir; 'guarded' only for c)."""
    payload = tmp_path / "payload.txt"
    payload.write_text("a file from an MSW plugin\n")
    apps = tmp_path / "plugins"
    apps.mkdir()
    (apps / "echo.py").write_text(ECHO.replace("FILENAME", repr(str(payload))))
    (apps / "seed.py").write_text(SEED_EXAMPLE)
    (apps / "changed.py").write_text(CHANGED_IMPORT.replace("FILENAME", repr(str(payload))))
    (apps / "guarded.py").write_text(ECHO.replace("FILENAME", "''"))
    probe = Probe()
    b = Node(
        fast(
            pki("b"),
            tmp_path / "b",
            "127.0.2.141",
            apps=[],
            apps_dir=apps,
            allow={"guarded": ["c"]},
        )
    )
    await b.start()
    assert b.address is not None
    a = Node(
        fast(
            pki("a"),
            tmp_path / "a",
            "127.0.2.142",
            apps=[],
            peers=[b.address],
            extra_apps={"probe": probe},
        )
    )
    try:
        await a.start()
        async with asyncio.timeout(20):
            await probe.ready.wait()
            await a.wait_peer("b")
        yield a, b, probe, payload
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.asyncio
async def test_original_plugins_run_unchanged(pair: tuple[Node, Node, Probe, Path]) -> None:
    _a, b, probe, payload = pair
    assert {"echo", "seed", "changed", "guarded"} <= set(b.apps)
    ctx = probe.ctx
    assert ctx is not None
    for app in ("echo", "changed"):
        reply = await ctx.request(Datapack("post", app, {"to": "b"}, b"hello"), within=10)
        assert (reply.method, reply.body, reply.origin) == ("reply", b"HELLO", "b")
        assert reply.head["from"] == app
    seed = await ctx.request(Datapack("post", "seed", {"to": "b"}, b"hi"), within=10)
    assert seed.body == b"recived"

    # The same authorization as any app: 'guarded' is open to c only.
    refused = await ctx.request(Datapack("post", "guarded", {"to": "b"}, b"x"), within=10)
    assert refused.head.get("error") == "refused"

    # method 'file': the plugin names a local file; it arrives as a verified file.
    ctx.send(Datapack("post", "echo", {"to": "b"}, b"file"))
    got = await probe.next(within=10)
    assert got.method == "file"
    assert await asyncio.to_thread(Path(got.file or "").read_bytes) == payload.read_bytes()

    # msw_queue.put(0): MSW's restart (exit 0 to the supervisor).
    ctx.send(Datapack("post", "echo", {"to": "b"}, b"restart"))
    await wait_until(lambda: b.restart_requested, 10, "the plugin's restart")


def test_console_update_compress_pushes_signed_code(tmp_path: Path) -> None:
    """The seed's console line ``update:compress;update_to:*``, and its ``update`` shortcut."""
    init_release_key(tmp_path / "release")
    program_a = tmp_path / "program-a"
    (program_a / "pkg").mkdir(parents=True)
    (program_a / "app.py").write_text("VERSION = 'new'\n")
    (program_a / "pkg" / "extra.py").write_text("X = 1\n")
    program_b = tmp_path / "program-b"
    program_b.mkdir()
    (program_b / "app.py").write_text("VERSION = 'old'\n")
    procs = MeshProcs(tmp_path)
    try:
        beta = procs.start(
            "beta", "127.0.2.143", "--app", "update", "--allow", "update=alpha",
            "--program-dir", str(program_b),
            "--release-pubkey", str(tmp_path / "release" / "release.pub"),
        )  # fmt: skip
        alpha = procs.start(
            "alpha", "127.0.2.144", "--app", "console", "--app", "update",
            "--program-dir", str(program_a),
            "--release-key", str(tmp_path / "release" / "release.key"),
            peers=[procs.addr("beta")], stdin=True,
        )  # fmt: skip
        assert alpha.stdin is not None
        wait_until_sync(lambda: "link to beta is up" in procs.stderr("alpha"), 20, "the link")
        alpha.stdin.write(b"update:compress;update_to:*\n")
        alpha.stdin.flush()
        wait_until_sync(lambda: beta.poll() is not None, 30, "beta applying and restarting")
        assert beta.returncode == 0  # exit 0: `mesh supervise` restarts it
        assert (program_b / "app.py").read_text() == "VERSION = 'new'\n"
        assert (program_b / "pkg" / "extra.py").exists()
        wait_until_sync(lambda: "applied 0." in procs.stderr("alpha"), 20, "beta's reply")
        first = (program_b / ".smartget-release.json").read_text()

        (program_a / "app.py").write_text("VERSION = 'newer'\n")
        beta = procs.start("beta", "127.0.2.143")
        wait_until_sync(
            lambda: procs.stderr("alpha").count("link to beta is up") >= 2, 20, "the new link"
        )
        alpha.stdin.write(b"update\n")  # plugins/input.py's shortcut
        alpha.stdin.flush()
        wait_until_sync(lambda: beta.poll() is not None, 30, "the second update")
        assert (program_b / "app.py").read_text() == "VERSION = 'newer'\n"
        assert (program_b / ".smartget-release.json").read_text() != first
    finally:
        procs.stop_all()
