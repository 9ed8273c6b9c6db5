"""Issue 12, item 8: with a relative --data-dir (the README's example), relayed and
refused files must not stay in DATA_DIR/tmp until the next restart."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartget.mesh import datapack as dpk
from smartget.mesh.datapack import Datapack, new_flag
from tests.helpers import wait_until_sync
from tests.integration.mesh.attack import MeshProcs, RawMember

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[MeshProcs]:
    fleet = MeshProcs(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _file(member: RawMember, to: str | None, filename: str, body: bytes) -> str:
    flag = new_flag()
    head = {"filename": filename, "sha256": hashlib.sha256(body).hexdigest(), "flag": flag}
    if to:
        head["to"] = to
    member.send_bytes(dpk.encode_head(Datapack("file", "logger", head), len(body)) + body)
    return flag


def test_relayed_and_refused_files_leave_no_tmp_file(procs: MeshProcs, tmp_path: Path) -> None:
    procs.start("gamma", "127.0.2.121", "--app", "logger")
    procs.start(
        "beta",
        "127.0.2.122",
        "--app",
        "logger",
        peers=[procs.addr("gamma")],
        data_dir="var/beta",  # relative, as in the README
        cwd=tmp_path,
    )
    tmp = tmp_path / "var" / "beta" / "tmp"
    member = RawMember(procs.identity("mallory"), procs.addrs["beta"])
    try:
        # Relayed: beta keeps it in tmp only until gamma has it.
        wait_until_sync(lambda: "link to gamma is up" in procs.stderr("beta"), 20, "beta-gamma")
        _file(member, "gamma", "relayed.bin", b"r" * 100_000)
        stored = procs.data_dir("gamma") / "recv" / "relayed.bin"
        wait_until_sync(stored.exists, 20, "the relayed file at gamma")
        wait_until_sync(lambda: not list(tmp.iterdir()), 10, "beta's tmp emptied after relaying")

        # Refused after it was stored: "d" is already a directory of beta's receive root.
        _file(member, None, "d/f.bin", b"first")
        second = _file(member, None, "d", b"second")
        refused = member.wait_for(lambda dp: dp.head.get("re") == second, within=20)
        assert refused[0].head.get("error") == "refused"
        assert not list(tmp.iterdir()), list(tmp.iterdir())
    finally:
        member.close()
