"""Mesh nodes as real processes: kill -9 and restart, the send CLI, supervised updates."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.net import free_port
from tests.helpers import stop_processes
from tests.helpers import wait_until_sync as wait_for

pytestmark = pytest.mark.slow

SMARTGET = [sys.executable, "-m", "smartget"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTGET, "mesh", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}

    def start(self, name: str, args: list[str] | None = None) -> None:
        if args is not None:
            self.args[name] = args
        log = open(self.root / f"{name}.stderr", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(self.args[name], stderr=log, stdout=log)
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        stop_processes(self.procs.values())


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    assert cli("ca", "init", str(tmp_path / "ca")).returncode == 0
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def issue(root: Path, name: str, ca: str = "ca") -> Path:
    result = cli("ca", "issue", str(root / ca), name, "--out", str(root / "nodes" / name))
    assert result.returncode == 0, result.stderr
    return root / "nodes" / name


def run_args(root: Path, name: str, listen: str, peers: list[str], *extra: str) -> list[str]:
    peers_file = root / f"{name}.address.txt"
    peers_file.write_text("".join(f"{p}\n" for p in peers))
    return [
        *SMARTGET, "mesh", "run",
        "--tls-dir", str(issue(root, name)),
        "--listen", listen,
        "--peers", str(peers_file),
        "--data-dir", str(root / "data" / name),
        "--heartbeat", "0.3",
        "--retry-interval", "0.2",
        "--retry-count", "300",
        "--no-dial-learned",
        "--log-level", "debug",
        *extra,
    ]  # fmt: skip


def logged(root: Path, name: str, text: str) -> bool:
    path = root / "data" / name / "log.txt"
    return path.exists() and text in path.read_text(errors="replace")


def test_line_kill_and_restart_receives_what_was_queued(fleet: Fleet, tmp_path: Path) -> None:
    names = ["a", "b", "c", "d", "e"]
    hosts = [f"127.0.2.{20 + i}" for i in range(5)]
    addrs = [f"{h}:{free_port(h)}" for h in hosts]
    for i, name in enumerate(names):
        neighbours = [addrs[j] for j in (i - 1, i + 1) if 0 <= j < 5]
        fleet.start(name, run_args(tmp_path, name, addrs[i], neighbours, "--app", "logger"))
    ops = issue(tmp_path, "ops")

    sent = cli("send", "--tls-dir", str(ops), "--via", addrs[0], "--to", "e", "--app", "logger",
               "--timeout", "0", "first")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: logged(tmp_path, "e", "first"), 30, "a packet from a to e")

    fleet.kill("e")
    sent = cli("send", "--tls-dir", str(ops), "--via", addrs[0], "--to", "e", "--app", "logger",
               "--timeout", "0", "while e was down")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    fleet.start("e")
    wait_for(lambda: logged(tmp_path, "e", "while e was down"), 40, "the queued packet")
    assert "origin=ops" in (tmp_path / "data" / "e" / "log.txt").read_text()

    # A certificate from another CA is refused, with the reason, non-zero.
    assert cli("ca", "init", str(tmp_path / "other")).returncode == 0
    stranger = issue(tmp_path, "ops", ca="other")
    refused = cli("send", "--tls-dir", str(stranger), "--via", addrs[2], "--to", "e",
                  "--app", "logger", "--timeout", "5", "hi")  # fmt: skip
    assert refused.returncode != 0
    assert "could not link" in refused.stderr
    assert all(fleet.procs[n].poll() is None for n in "abcde")


def test_supervised_node_takes_a_signed_update_and_restarts(fleet: Fleet, tmp_path: Path) -> None:
    assert cli("release-key", "init", str(tmp_path / "release")).returncode == 0
    program = tmp_path / "program"
    program.mkdir()
    (program / "app.py").write_text("VERSION = '1'\n")
    new = tmp_path / "new"
    (new / "pkg").mkdir(parents=True)
    (new / "app.py").write_text("VERSION = '2'\n")
    (new / "pkg" / "extra.py").write_text("X = 1\n")
    a_addr, e_addr = (
        f"127.0.2.30:{free_port('127.0.2.30')}",
        f"127.0.2.31:{free_port('127.0.2.31')}",
    )
    fleet.start("a", run_args(tmp_path, "a", a_addr, [e_addr], "--app", "logger"))
    e_run = run_args(
        tmp_path, "e", e_addr, [a_addr],
        "--app", "update", "--allow", "update=ops",
        "--program-dir", str(program),
        "--release-pubkey", str(tmp_path / "release" / "release.pub"),
    )  # fmt: skip
    fleet.start("e", [*SMARTGET, "mesh", "supervise", "--delay", "0.2", "--", *e_run])
    ops = issue(tmp_path, "ops")
    push = [
        "update", "push", "--tls-dir", str(ops), "--via", a_addr, "--to", "e",
        "--release-key", str(tmp_path / "release" / "release.key"),
        "--program-dir", str(new), "--timeout", "30",
    ]  # fmt: skip

    applied = cli(*push, "--version", "2.0")
    assert applied.returncode == 0, applied.stderr
    assert "e: applied 2.0" in applied.stdout
    assert (program / "app.py").read_text() == "VERSION = '2'\n"
    assert (program / "pkg" / "extra.py").exists()
    wait_for(lambda: b"restarting (#1)" in (tmp_path / "e.stderr").read_bytes(), 20, "a restart")
    assert fleet.procs["e"].poll() is None  # the supervisor runs on

    older = cli(*push, "--version", "1.5")
    assert older.returncode == 0, older.stderr
    assert "refused: version 1.5 is not newer" in older.stdout


def test_shell_and_update_closed_by_default(fleet: Fleet, tmp_path: Path) -> None:
    addr = f"127.0.2.40:{free_port('127.0.2.40')}"
    fleet.start("a", run_args(tmp_path, "a", addr, []))
    ops = issue(tmp_path, "ops")
    result = cli("send", "--tls-dir", str(ops), "--via", addr, "--to", "a", "--app", "shell",
                 "--timeout", "20", "id")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "refused: node 'ops' may not use app 'shell'" in result.stdout
    assert os.path.exists(tmp_path / "data" / "a")


def test_console_reads_msw_input_syntax(fleet: Fleet, tmp_path: Path) -> None:
    addr = f"127.0.2.41:{free_port('127.0.2.41')}"
    args = run_args(tmp_path, "a", addr, [], "--app", "console", "--app", "logger")
    (tmp_path / "report.txt").write_text("file body\n")
    with open(tmp_path / "a.stderr", "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=err, stderr=err)
    fleet.procs["console"] = proc
    assert proc.stdin is not None
    proc.stdin.write(b"logger:hello from the console;k:v\n")
    proc.stdin.write(f"(file)logger:{tmp_path / 'report.txt'};filename:r.txt\n".encode())
    proc.stdin.flush()
    wait_for(lambda: logged(tmp_path, "a", "hello from the console"), 20, "the console line")
    wait_for(lambda: logged(tmp_path, "a", "(file stored at"), 20, "the console file")
    proc.stdin.close()  # end of input ends the console, not the node
    assert "k: v" in (tmp_path / "data" / "a" / "log.txt").read_text()
    assert proc.poll() is None
