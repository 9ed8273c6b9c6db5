"""CA, certificates, packet signatures, signed updates, confined paths."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import AuthError, ConfigError
from smartget.mesh.apps.update import (
    RELEASE_FILE,
    UpdateError,
    current_version,
    pack,
    verify_and_unpack,
)
from smartget.mesh.ca import (
    init_ca,
    init_release_key,
    issue_node,
    load_identity,
    load_private_key,
    load_public_key,
    sign_datapack,
    verify_datapack,
)
from smartget.mesh.datapack import Datapack
from smartget.mesh.policy import safe_relpath


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    issue_node(tmp_path / "ca", "alpha", tmp_path / "alpha")
    issue_node(tmp_path / "ca", "beta", tmp_path / "beta")
    return tmp_path


def test_issue_writes_what_a_node_needs_and_never_the_ca_key(pki: Path) -> None:
    assert sorted(p.name for p in (pki / "alpha").iterdir()) == ["ca.crt", "node.crt", "node.key"]
    assert (pki / "alpha" / "node.key").stat().st_mode & 0o077 == 0
    assert load_identity(pki / "alpha").node_id == "alpha"
    with pytest.raises(ConfigError, match="already holds a CA"):
        init_ca(pki / "ca")
    with pytest.raises(ConfigError, match="node id"):
        issue_node(pki / "ca", "a&b", pki / "bad")


def test_node_dir_from_another_ca_does_not_load(pki: Path) -> None:
    init_ca(pki / "other")
    issue_node(pki / "other", "gamma", pki / "gamma")
    (pki / "gamma" / "ca.crt").write_bytes((pki / "ca" / "ca.crt").read_bytes())
    with pytest.raises(ConfigError, match="not a node certificate"):
        load_identity(pki / "gamma")


def test_signature_proves_origin_and_detects_tampering(pki: Path) -> None:
    alpha = load_identity(pki / "alpha")
    dp = sign_datapack(Datapack("post", "shell", {"to": "x&y", "flag": "f"}, b"uptime"), alpha)
    dp = dp.with_head({"to": "y", "hops": "3"})  # proxies change 'to' and 'hops'
    assert verify_datapack(dp, alpha.ca_cert) == "alpha"
    for change in ({"body": b"rm -rf /"}, {"app": "update"}):
        forged = dataclasses.replace(dp, **change)  # type: ignore[arg-type]
        with pytest.raises(AuthError):
            verify_datapack(forged, alpha.ca_cert)
    relabelled = Datapack(dp.method, dp.app, {**dp.head, "id": "beta"}, dp.body)
    with pytest.raises(AuthError):
        verify_datapack(relabelled, alpha.ca_cert)
    # The final destination, the flag and the time are signed (issue 12, item 1).
    assert dp.head["dest"] == "y"
    for key, value in (("dest", "z"), ("flag", "g"), ("time", "1"), ("method", "get")):
        if key == "method":
            forged = dataclasses.replace(dp, method=value)
        else:
            forged = dp.with_head({key: value})
        with pytest.raises(AuthError):
            verify_datapack(forged, alpha.ca_cert)
    with pytest.raises(AuthError, match="not signed"):
        verify_datapack(Datapack("post", "x", {"id": "alpha"}), alpha.ca_cert)


def test_signature_from_another_ca_is_refused(pki: Path) -> None:
    init_ca(pki / "other")
    issue_node(pki / "other", "alpha", pki / "fake")
    fake = load_identity(pki / "fake")
    dp = sign_datapack(Datapack("post", "shell", {}, b"id"), fake)
    with pytest.raises(AuthError):
        verify_datapack(dp, load_identity(pki / "alpha").ca_cert)


@given(st.dictionaries(st.sampled_from(["sig", "cert", "id"]), st.text(max_size=80)))
def test_garbage_signatures_raise_only_auth_error(head: dict[str, str]) -> None:
    ca_cert = _CA_CERT[0]
    with contextlib.suppress(AuthError):
        verify_datapack(Datapack("post", "x", head), ca_cert)


_CA_CERT: list = []


@pytest.fixture(autouse=True)
def _ca_cert(pki: Path) -> None:
    _CA_CERT[:] = [load_identity(pki / "alpha").ca_cert]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.txt", True),
        ("dir/sub/a.txt", True),
        ("./a", True),
        ("../a", False),
        ("a/../../b", False),
        ("/etc/passwd", False),
        ("\\\\server\\share", False),
        ("c:evil", False),
        ("", False),
        ("a\x00b", False),
    ],
)
def test_safe_relpath(name: str, ok: bool) -> None:
    assert (safe_relpath(name) is not None) == ok


# -- signed updates ------------------------------------------------------------------


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, Path, Path]:
    key, pub = init_release_key(tmp_path / "release")
    program = tmp_path / "program"
    (program / "pkg").mkdir(parents=True)
    (program / "pkg" / "mod.py").write_text("VERSION = 2\n")
    (program / "main.py").write_text("print('v2')\n")
    (program / "pkg" / "__pycache__").mkdir()
    (program / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    package = pack(program, "2.0.0", load_private_key(key), tmp_path / "update.tar.gz")
    target = tmp_path / "target"
    target.mkdir()
    (target / "main.py").write_text("print('v1')\n")
    return package, pub, target


def test_update_applies_when_signed_and_newer(release: tuple[Path, Path, Path]) -> None:
    package, pub, target = release
    version = verify_and_unpack(package, target, load_public_key(pub), current="1.0")
    assert version == "2.0.0"
    assert (target / "main.py").read_text() == "print('v2')\n"
    assert (target / "pkg" / "mod.py").exists()
    assert not (target / "pkg" / "__pycache__").exists()
    assert current_version(target) == "2.0.0"
    assert json.loads((target / RELEASE_FILE).read_text()) == {"version": "2.0.0"}
    with pytest.raises(UpdateError, match="not newer"):  # the same package again
        verify_and_unpack(package, target, load_public_key(pub))


def _rewrite(package: Path, change: dict[str, bytes | None]) -> None:
    """Rewrite members of a package (None removes one) keeping the rest."""
    with tarfile.open(package) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(package, "w:gz") as tar:
        for info, data in members:
            if info.name in change:
                new = change.pop(info.name)
                if new is None:
                    continue
                data = new
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in change.items():
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"files/main.py": b"import os; os.system('evil')\n"}, "tampered"),
        ({"MANIFEST.sig": None}, "unsigned"),
        ({"MANIFEST.sig": base64.b64encode(b"\0" * 64)}, "signature"),
        ({"files/../../escape.py": b"x"}, "inside the program"),
        ({"files/extra.py": b"x"}, "unlisted"),
        ({"files/pkg/mod.py": None}, "lacks files"),
    ],
)
def test_update_refused_and_nothing_written(
    release: tuple[Path, Path, Path], change: dict[str, bytes | None], reason: str
) -> None:
    package, pub, target = release
    _rewrite(package, change)
    with pytest.raises(UpdateError, match=reason):
        verify_and_unpack(package, target, load_public_key(pub), current="1.0")
    assert (target / "main.py").read_text() == "print('v1')\n"
    assert not (target / RELEASE_FILE).exists()
    assert not (target.parent / "escape.py").exists()


def test_update_older_or_other_key_refused(
    release: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    package, pub, target = release
    with pytest.raises(UpdateError, match="not newer"):
        verify_and_unpack(package, target, load_public_key(pub), current="2.0.1")
    _, other_pub = init_release_key(tmp_path / "other")
    with pytest.raises(UpdateError, match="signature"):
        verify_and_unpack(package, target, load_public_key(other_pub), current="1.0")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UpdateError, match="not a valid"):
        verify_and_unpack(tmp_path / "junk.tar.gz", target, load_public_key(pub))


def test_old_signatures_refused_when_asked(pki: Path) -> None:
    alpha = load_identity(pki / "alpha")
    dp = sign_datapack(Datapack("post", "shell", {}, b"id"), alpha, now=1_000_000)
    assert dp.head["time"] == "1000000"
    assert verify_datapack(dp, alpha.ca_cert) == "alpha"  # no age asked
    assert verify_datapack(dp, alpha.ca_cert, max_age=600, now=1_000_500) == "alpha"
    with pytest.raises(AuthError, match="not within 600 s"):
        verify_datapack(dp, alpha.ca_cert, max_age=600, now=1_000_601)
    dp = dp.with_head({"time": "2000000"})  # the time is signed
    with pytest.raises(AuthError):
        verify_datapack(dp, alpha.ca_cert)
