"""The tracker's hot path compiled with mypyc, where this machine can build it.

``smartget.hub.tracker`` and ``smartget.hub.udptracker`` are plain typed Python. mypyc
(mypy's compiler, made for this: mypy and black ship compiled the same way) turns them
into C extensions that run the same code with less interpreter overhead per announce
(benchmarks/tracker.py). ``scripts/bootstrap`` builds them into ``<venv>/native``, never
beside the sources, so an edited module is never shadowed by an old build:
:func:`enable` (called by ``smartget.hub`` before it imports anything) puts that
directory first on the package's path only while the SHA-256 of every compiled source
recorded at build time still matches the source, for the same Python. Otherwise, with
``SMARTGET_NATIVE=0``, or where there is no C compiler, the pure Python modules run:
the same behaviour, slower.

Usage: python -m smartget.native build | status
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["MODULES", "build", "enable", "fresh", "native_root", "usable"]

MODULES = ("smartget/hub/tracker.py", "smartget/hub/udptracker.py")
MANIFEST = "sources.json"
BUILD_TIMEOUT = 600.0  # seconds: mypyc type-checks the import graph, then gcc compiles

enabled = False  # set by enable(): the hub logs which core runs


def sources_root() -> Path:
    """The directory holding the ``smartget`` package (``src/`` in a checkout)."""
    return Path(__file__).resolve().parent.parent


def native_root() -> Path:
    """Where the build goes: inside the environment, since it is built for its Python."""
    return Path(sys.prefix) / "native"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _python() -> str:
    return f"{sys.implementation.cache_tag} {sys.version}"


def fresh(root: Path, sources: Path) -> bool:
    """Does ``root`` hold a build of exactly these sources, for this Python?"""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        built = manifest["sources"]
        return bool(
            manifest["python"] == _python()
            and set(built) == set(MODULES)  # a module built once but no longer listed: stale
            and all(built[m] == _digest(sources / m) for m in MODULES)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def usable() -> bool:
    """Is the build to be used: not turned off, and fresh for the sources here?"""
    return os.environ.get("SMARTGET_NATIVE", "1") != "0" and fresh(native_root(), sources_root())


def enable(package_path: list[str], package: str = "smartget.hub") -> bool:
    """Put a fresh build of ``package`` first on its ``__path__``; True if there is one."""
    global enabled
    if not usable():
        return False
    root = native_root()
    if str(root) not in sys.path:
        sys.path.append(str(root))  # mypyc's runtime library is a top-level module
    package_path.insert(0, str(root.joinpath(*package.split("."))))
    enabled = True
    return True


def build(target: Path) -> None:
    """Compile :data:`MODULES` into ``target`` (replaced whole, and only on success)."""
    with tempfile.TemporaryDirectory(prefix="smartget-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            sources_root() / "smartget",
            work / "smartget",
            ignore=shutil.ignore_patterns("__pycache__", "*.so"),
        )
        done = subprocess.run(
            [sys.executable, "-m", "mypyc", *MODULES],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mypyc failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        stage = target.with_name(target.name + ".new")
        shutil.rmtree(stage, ignore_errors=True)
        built = [*work.glob("*.so"), *(work / "smartget" / "hub").glob("*.so")]
        for library in built:
            dest = stage / library.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(library, dest)
        manifest = {"python": _python(), "sources": {m: _digest(work / m) for m in MODULES}}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        stage.rename(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smartget.native",
        description="Build (or check) the mypyc-compiled tracker modules of this environment.",
    )
    parser.add_argument("command", choices=["build", "status"])
    parser.add_argument(
        "--if-stale", action="store_true", help="build only when no fresh build is there"
    )
    args = parser.parse_args(argv)
    root = native_root()
    is_fresh = fresh(root, sources_root())
    if args.command == "status":
        print(f"{root}: {'fresh' if is_fresh else 'missing or stale'}")
        return 0 if is_fresh else 1
    if args.if_stale and is_fresh:
        return 0
    print(f"compiling {', '.join(MODULES)} with mypyc into {root}", flush=True)
    try:
        build(root)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"not compiled (the pure Python modules will run): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
