"""Issue 12, item 14: an update package is not walked before its signature is checked.

A member allowed to send updates (or anyone who can put a file where the update app
reads it) sends a package with a forged manifest signature followed by 30,000 tar
headers. The reader must refuse it after the first two members, not after reading all.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import pytest

from smartget.mesh.apps.update import UpdateError, pack, verify_and_unpack
from smartget.mesh.ca import init_release_key, load_private_key, load_public_key


def _forged(path: Path, members: int) -> Path:
    manifest = json.dumps({"format": "smartget-update/1", "version": "9.0", "files": {}}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (
            ("MANIFEST.json", manifest),
            ("MANIFEST.sig", base64.b64encode(b"x" * 64)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for i in range(members):
            info = tarfile.TarInfo(f"files/{i}")
            tar.addfile(info, io.BytesIO(b""))
    return path


def _count_headers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = tarfile.TarInfo.fromtarfile.__func__  # type: ignore[attr-defined]

    def counting(cls: type[tarfile.TarInfo], tar: tarfile.TarFile) -> tarfile.TarInfo:
        count[0] += 1
        return real(cls, tar)  # type: ignore[no-any-return]

    monkeypatch.setattr(tarfile.TarInfo, "fromtarfile", classmethod(counting))
    return count


def test_forged_package_is_refused_before_its_headers_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_release_key(tmp_path / "release")
    public = load_public_key(tmp_path / "release" / "release.pub")
    package = _forged(tmp_path / "forged.tar.gz", 30_000)
    program = tmp_path / "program"
    program.mkdir()
    count = _count_headers(monkeypatch)
    with pytest.raises(UpdateError, match="signature"):
        verify_and_unpack(package, program, public, current="1.0")
    assert count[0] <= 3, f"{count[0]} tar headers read before the signature was checked"
    assert list(program.iterdir()) == []


def test_signature_members_must_come_first(tmp_path: Path) -> None:
    """A package whose MANIFEST.sig is not at the front is refused, not searched for."""
    init_release_key(tmp_path / "release")
    key = load_private_key(tmp_path / "release" / "release.key")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("A = 1\n")
    good = pack(source, "2.0", key, tmp_path / "good.tar.gz")
    moved = tmp_path / "moved.tar.gz"
    with tarfile.open(good, "r:gz") as tar_in, tarfile.open(moved, "w:gz") as tar_out:
        members = tar_in.getmembers()
        for info in [m for m in members if m.name.startswith("files/")] + members[:2]:
            tar_out.addfile(info, tar_in.extractfile(info))
    program = tmp_path / "program"
    program.mkdir()
    public = load_public_key(tmp_path / "release" / "release.pub")
    with pytest.raises(UpdateError, match=r"MANIFEST\.json"):
        verify_and_unpack(moved, program, public, current="1.0")
    assert verify_and_unpack(good, program, public, current="1.0") == "2.0"
