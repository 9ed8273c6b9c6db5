"""Issue 12, item 1: a relay replays a packet ops signed for beta's shell.

The relay is a CA member on a bare TLS socket (tests/integration/mesh/attack.py). It
forwards ops's signed command once, as an honest relay would, then re-sends it with
``to`` = ``beta&beta``, ``beta&beta&beta`` and ``gamma``, and again after beta restarts
(kill -9). The command must run once; every replay is refused with a reply.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.mesh.ca import sign_datapack
from smartget.mesh.datapack import Datapack, new_flag
from tests.integration.mesh.attack import MeshProcs, RawMember

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[MeshProcs]:
    fleet = MeshProcs(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _refused_by(node: str, flag: str) -> object:
    return lambda dp: (
        dp.head.get("re") == flag
        and dp.head.get("id") == node
        and dp.head.get("error") == "refused"
    )


def test_signed_command_runs_once_whatever_the_relay_does(procs: MeshProcs, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    for name, host in (("beta", "127.0.2.101"), ("gamma", "127.0.2.102")):
        procs.start(name, host, "--app", "shell", "--allow", "shell=ops")
    ops = procs.identity("ops")
    relay = procs.identity("relay")
    argv = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('ran\\n')"]
    flag = new_flag()
    signed = sign_datapack(
        Datapack(
            "post",
            "shell",
            {"to": "beta", "from": "cli", "flag": flag, "id": "ops"},
            json.dumps(argv).encode(),
        ),
        ops,
    )
    to_beta = RawMember(relay, procs.addrs["beta"])
    to_gamma = RawMember(relay, procs.addrs["gamma"])
    try:
        to_beta.send(signed.with_head({"hops": "1"}))  # the honest relay's one copy
        ran = to_beta.wait_for(lambda dp: dp.head.get("re") == flag and "exit" in dp.head)
        assert ran[0].head["exit"] == "0"

        to_beta.send(signed.with_head({"to": "beta&beta", "hops": "1"}))
        to_beta.send(signed.with_head({"to": "beta&beta&beta", "hops": "1"}))
        refusals = to_beta.wait_for(_refused_by("beta", flag), count=2)  # type: ignore[arg-type]
        assert all(b"replay" in dp.body for dp in refusals), [dp.body for dp in refusals]
        to_gamma.send(signed.with_head({"to": "gamma", "hops": "1"}))
        refused = to_gamma.wait_for(_refused_by("gamma", flag))  # type: ignore[arg-type]
        assert b"destination" in refused[0].body, refused[0].body
    finally:
        to_beta.close()
        to_gamma.close()

    procs.kill("beta")  # kill -9: the replay cache must already be on disk
    procs.start("beta", "127.0.2.101")
    again = RawMember(relay, procs.addrs["beta"])
    try:
        again.send(signed.with_head({"hops": "1"}))
        again.send(signed.with_head({"to": "beta&beta&beta&beta", "hops": "1"}))
        refusals = again.wait_for(_refused_by("beta", flag), count=2)  # type: ignore[arg-type]
        assert all(b"replay" in dp.body for dp in refusals)
    finally:
        again.close()
    assert marker.read_text() == "ran\n"


def test_signed_packet_for_another_node_is_refused_even_by_open_apps(
    procs: MeshProcs, tmp_path: Path
) -> None:
    """The logger is open to every member, but a packet signed for beta is not gamma's."""
    procs.start("gamma", "127.0.2.103", "--app", "logger")
    ops = procs.identity("ops")
    flag = new_flag()
    signed = sign_datapack(
        Datapack("post", "logger", {"to": "beta", "flag": flag, "id": "ops"}, b"for beta only"),
        ops,
    )
    member = RawMember(procs.identity("relay"), procs.addrs["gamma"])
    try:
        member.send(signed.with_head({"to": "gamma"}))
        refused = member.wait_for(_refused_by("gamma", flag))  # type: ignore[arg-type]
        assert b"destination" in refused[0].body
    finally:
        member.close()
    log = procs.data_dir("gamma") / "log.txt"
    assert not log.exists() or "for beta only" not in log.read_text()
