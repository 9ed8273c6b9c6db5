"""update: signed code updates of the program directory (seed 001, plugins/update.py).

MSW's update plugin packs the program directory and sends it; every receiver unpacks it
over its own code and restarts. Anyone could replace the code. Here (issue 7):

- :func:`pack` writes a ``.tar.gz`` holding ``MANIFEST.json`` (version, and the sha256 and
  size of every file), ``MANIFEST.sig`` (the manifest's Ed25519 signature by the
  release key, ``smartget mesh release-key init``) and the files under ``files/``.
- :func:`verify_and_unpack` checks, before writing anything: the signature against the
  node's release public key (the manifest and its signature are the first two members;
  nothing after them is parsed before they are checked), that the version is newer than
  the node's own, that every member is a regular file under ``files/`` whose path stays
  inside the program directory, and that names, sizes and digests match the manifest
  exactly. Then it writes each file atomically and records the version in
  ``.smartget-release.json``.
- The app is closed by default (only ``--allow update=ID``), accepts ``file`` packets,
  replies ``applied``/``refused`` and then asks the node to restart (exit 0, which
  ``smartget mesh supervise`` turns into a restart).

MSW's console commands (seed 001, "plugins/input.py"), from a local app only (the
console; a remote ``compress`` could make a node push its code everywhere):

- ``update:compress;update_to:TARGET`` packs the program directory, signs it with the
  node's release key (``--release-key``) and sends it to the update app of TARGET (a
  node id, ``a&b`` hops, or ``*``: every direct peer). Its version is ``version:`` if
  given, else this node's own ``MAJOR.MINOR.PATCH`` plus the UTC date and time
  (:func:`auto_version`), so each push is newer than the last. The receivers' replies
  go to the asking app (the console prints them). The console's ``update`` alone is
  this with ``update_to:*``.
- ``update:update;filename:PATH`` verifies and installs a package already on this node
  (same checks as one received), then restarts.

Settings (``app_settings['update']``): ``program_dir``, ``release_pubkey`` (a path),
``release_key`` (a path; only for ``compress``), ``restart`` (True).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import smartget
from smartget.config import DIR, FILE, setting
from smartget.errors import MeshError, UpdateError
from smartget.mesh.apps import App, AppContext
from smartget.mesh.ca import load_private_key, load_public_key
from smartget.mesh.datapack import Received
from smartget.mesh.policy import safe_relpath

__all__ = [
    "APP",
    "RELEASE_FILE",
    "UpdateApp",
    "UpdateError",
    "current_version",
    "pack",
    "parse_version",
    "verify_and_unpack",
]

RELEASE_FILE = ".smartget-release.json"
RESTART_GRACE = 10.0  # seconds to let queued packets leave before restarting
EXCLUDE_DIRS = frozenset({"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"})
EXCLUDE_SUFFIXES = (".pyc", ".pyo")
MAX_FILES = 20_000
MAX_TOTAL = 2 << 30
MAX_MANIFEST = 4 << 20
_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,5}")


def parse_version(text: str) -> tuple[int, ...]:
    if not _VERSION.fullmatch(text):
        raise UpdateError(f"version {text[:32]!r} is not dotted numbers such as 1.4.2")
    return tuple(int(part) for part in text.split("."))


def current_version(program_dir: Path) -> str:
    """The version last applied to ``program_dir``, else the running smartget's."""
    try:
        data = json.loads((program_dir / RELEASE_FILE).read_text())
        version = str(data["version"])
        parse_version(version)
        return version
    except (OSError, ValueError, KeyError, TypeError, UpdateError):
        return smartget.__version__


def _files(program_dir: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(program_dir):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDE_DIRS)
        for name in sorted(names):
            path = Path(root, name)
            if name == RELEASE_FILE or name.endswith(EXCLUDE_SUFFIXES) or path.is_symlink():
                continue
            found.append(path)
    return found


def pack(program_dir: Path, version: str, key: Ed25519PrivateKey, out: Path) -> Path:
    """Write the signed package of ``program_dir`` at ``version`` to ``out`` (blocking)."""
    parse_version(version)
    entries: dict[str, dict[str, object]] = {}
    files = _files(program_dir)
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(program_dir).as_posix()
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = json.dumps(
        {
            "format": "smartget-update/1",
            "version": version,
            "created": int(time.time()),
            "files": entries,
        },
        sort_keys=True,
    ).encode()
    signature = base64.b64encode(key.sign(manifest))
    with tarfile.open(out, "w:gz") as tar:
        for name, blob in (("MANIFEST.json", manifest), ("MANIFEST.sig", signature)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for path in files:
            rel = path.relative_to(program_dir).as_posix()
            info = tarfile.TarInfo(f"files/{rel}")
            info.size = path.stat().st_size
            info.mode = path.stat().st_mode & 0o755
            with open(path, "rb") as file:
                tar.addfile(info, file)
    return out


def _read_next(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    """The next member of ``tar``, which must be the regular file ``name`` under ``limit``.

    Members are read in order, one header at a time: the manifest and its signature come
    first, so a forged package is refused before any other header is parsed (issue 12,
    item 14: ``getmember`` would have walked every header of an unchecked archive).
    """
    info = tar.next()
    if info is None or info.name != name:
        found = "nothing" if info is None else repr(info.name[:80])
        raise UpdateError(
            f"unsigned: a package starts with MANIFEST.json then MANIFEST.sig; "
            f"expected {name}, found {found}"
        )
    if not info.isreg() or info.size > limit:
        raise UpdateError(f"{name} is not a regular file under {limit} bytes")
    file = tar.extractfile(info)
    assert file is not None
    return file.read()


def verify_and_unpack(
    package: Path, program_dir: Path, public_key: Ed25519PublicKey, *, current: str | None = None
) -> str:
    """Check ``package`` (see the module docstring), then install it; return its version.

    Files are unpacked into a staging directory inside ``program_dir`` (hashed on the
    way, never held in memory) and moved into place only when every check passed.
    Raises :class:`UpdateError` and changes nothing in the program when any check fails.
    """
    root = program_dir.resolve()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".update-staging-"))
    try:
        with tarfile.open(package, "r:gz") as tar:
            version, staged = _check_and_stage(tar, root, staging, public_key, current)
        for rel, staged_path in staged:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged_path, dest)
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"not a valid update package: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / RELEASE_FILE).write_text(json.dumps({"version": version}) + "\n")
    return version


def _check_and_stage(
    tar: tarfile.TarFile,
    root: Path,
    staging: Path,
    public_key: Ed25519PublicKey,
    current: str | None,
) -> tuple[str, list[tuple[Path, Path]]]:
    manifest_raw = _read_next(tar, "MANIFEST.json", MAX_MANIFEST)
    signature = base64.b64decode(_read_next(tar, "MANIFEST.sig", 4096), validate=True)
    try:
        public_key.verify(signature, manifest_raw)
    except InvalidSignature:
        raise UpdateError("the manifest's signature does not match the release key") from None
    manifest = json.loads(manifest_raw)
    version = str(manifest["version"])
    entries: dict[str, dict[str, object]] = manifest["files"]
    own = current or current_version(root)
    if parse_version(version) <= parse_version(own):
        raise UpdateError(f"version {version} is not newer than this node's {own}")
    if len(entries) > MAX_FILES:
        raise UpdateError(f"more than {MAX_FILES} files")
    staged: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    total = 0
    while (info := tar.next()) is not None:
        rel = safe_relpath(info.name.removeprefix("files/"))
        if not info.name.startswith("files/") or rel is None or not info.isreg():
            raise UpdateError(f"member {info.name[:80]!r} is not a file inside the program")
        key = rel.as_posix()
        if not (root / rel).resolve().is_relative_to(root) or key not in entries or key in seen:
            raise UpdateError(f"member {info.name[:80]!r} leads outside, is unlisted or twice")
        seen.add(key)
        total += info.size
        if total > MAX_TOTAL:
            raise UpdateError(f"package unpacks to more than {MAX_TOTAL} bytes")
        source = tar.extractfile(info)
        assert source is not None
        hasher = hashlib.sha256()
        staged_path = staging / f"{len(staged)}"
        with open(staged_path, "wb") as out:
            while chunk := source.read(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
        os.chmod(staged_path, info.mode & 0o755 or 0o644)
        if hasher.hexdigest() != entries[key].get("sha256"):
            raise UpdateError(f"{key} does not match the signed manifest (tampered)")
        staged.append((rel, staged_path))
    if seen != set(entries):
        raise UpdateError("the package lacks files named in its manifest")
    return version, staged


def auto_version(own: str, now: float) -> str:
    """The version of a console push: ``own``'s first three parts, then the UTC date and
    time to the millisecond (``1.4.2.20261206.191530123``), so later pushes are newer."""
    base = own.split(".")[:3]
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
    day = stamp.strftime("%Y%m%d")
    clock = stamp.strftime("%H%M%S") + f"{stamp.microsecond // 1000:03d}"
    return ".".join([*base, day, str(int(clock))])


@dataclass(frozen=True)
class UpdateSettings:
    """``app_settings['update']`` (``smartget mesh run --program-dir``, ...), as paths."""

    program_dir: Path | None = setting(
        None,
        "Where the update app installs code [default: smartget's parent directory].",
        click_type=DIR,
    )
    release_pubkey: Path | None = setting(
        None, "release.pub that update packages must be signed with.", click_type=FILE
    )
    release_key: Path | None = setting(
        None,
        "release.key with which the console's update:compress signs this node's code "
        "(keep it off nodes that need not push).",
        click_type=FILE,
    )

    def app_settings(self) -> dict[str, str | None]:
        """The settings as the app reads them: paths as text."""
        return {
            "program_dir": str(self.program_dir) if self.program_dir else None,
            "release_pubkey": str(self.release_pubkey) if self.release_pubkey else None,
            "release_key": str(self.release_key) if self.release_key else None,
        }


class UpdateApp(App):
    name = "update"
    closed_by_default = True

    async def run(self, ctx: AppContext) -> None:
        program_dir = Path(ctx.settings.get("program_dir") or Path(smartget.__file__).parent.parent)
        while True:
            dp = await ctx.receive()
            if dp.method == "file" and dp.file is not None:
                await self._install(ctx, dp, Path(dp.file), program_dir, remove=True)
            elif dp.method in ("post", "get") and dp.via is None:
                command = dp.body.strip()
                if command == b"compress":
                    await self._compress(ctx, dp, program_dir)
                elif command == b"update":
                    if not dp.head.get("filename"):
                        ctx.send(dp.reply(b"refused: update:update needs filename:PACKAGE"))
                        continue
                    path = Path(dp.head["filename"])
                    await self._install(ctx, dp, path, program_dir, remove=False)
                else:
                    ctx.send(dp.reply(b"refused: expected 'compress' or 'update'"))
            elif dp.method in ("post", "get"):
                ctx.send(dp.reply(b"refused: update commands come from this node only"))

    async def _install(
        self, ctx: AppContext, dp: Received, package: Path, program_dir: Path, *, remove: bool
    ) -> None:
        pub_path = ctx.settings.get("release_pubkey")
        try:
            if not pub_path:
                raise UpdateError("this node has no release public key (--release-pubkey)")
            key = load_public_key(Path(pub_path))
            version = await asyncio.to_thread(verify_and_unpack, package, program_dir, key)
        except (UpdateError, MeshError) as exc:
            ctx.log.warning("refused update from %s: %s", dp.origin, exc)
            ctx.send(dp.reply(f"refused: {exc}".encode(), update="refused"))
            return
        finally:
            if remove:
                await asyncio.to_thread(package.unlink, missing_ok=True)
        ctx.log.warning("applied update %s from %s; restarting", version, dp.origin)
        ctx.send(dp.reply(f"applied {version}".encode(), update="applied", version=version))
        if ctx.settings.get("restart", True):
            # Let the reply (and anything else queued) leave before the node stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESTART_GRACE):
                    await ctx.wait_quiet()
            ctx.request_restart()

    async def _compress(self, ctx: AppContext, dp: Received, program_dir: Path) -> None:
        """``update:compress;update_to:TARGET``: pack, sign, send (seed 001)."""
        target = dp.head.get("update_to", "")
        key_path = ctx.settings.get("release_key")
        try:
            if not target:
                raise UpdateError("update:compress needs update_to:NODE (or *)")
            if not key_path:
                raise UpdateError("this node has no release key to sign with (--release-key)")
            key = load_private_key(Path(key_path))
            version = dp.head.get("version") or auto_version(
                current_version(program_dir), time.time()
            )
            ctx.data_dir.mkdir(parents=True, exist_ok=True)
            out = ctx.data_dir / f"update-{version}.tar.gz"
            package = await asyncio.to_thread(pack, program_dir, version, key, out)
            asker = dp.head.get("from", "update")
            sent = await ctx.send_file(
                package, to=target, app="update", filename=package.name, **{"from": asker}
            )
        except (UpdateError, MeshError, OSError) as exc:
            ctx.log.warning("update:compress failed: %s", exc)
            ctx.send(dp.reply(f"refused: {exc}".encode(), update="refused"))
            return
        ctx.log.warning("sent update %s of %s to %s", version, program_dir, target)
        ctx.send(
            dp.reply(
                f"sent update {version} to {target}".encode(),
                update="sent",
                version=version,
                flag_sent=sent.flag,
            )
        )
        ctx.spawn(_remove_when_sent(ctx, package))


async def _remove_when_sent(ctx: AppContext, package: Path) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3600):
            await ctx.wait_quiet()
    await asyncio.to_thread(package.unlink, missing_ok=True)


APP = UpdateApp
