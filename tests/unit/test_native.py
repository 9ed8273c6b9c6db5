"""The mypyc-compiled tracker: used only while built from exactly the sources here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import smartget.hub.tracker
import smartget.hub.udptracker
from smartget import native


def sources(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for module in native.MODULES:
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).write_text(f"# {module}\n")
    return root


def build_of(tmp_path: Path, root: Path, python: str | None = None) -> Path:
    """A build directory whose manifest records ``root``'s sources."""
    build = tmp_path / "native"
    build.mkdir()
    manifest = {
        "python": python or native._python(),
        "sources": {m: native._digest(root / m) for m in native.MODULES},
    }
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    return build


def test_a_build_is_fresh_only_for_its_own_sources_and_python(tmp_path: Path) -> None:
    root = sources(tmp_path)
    build = build_of(tmp_path, root)
    assert native.fresh(build, root)
    (root / native.MODULES[0]).write_text("# edited after the build\n")
    assert not native.fresh(build, root)
    assert not native.fresh(tmp_path / "nowhere", root)
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["sources"]["smartget/hub/other.py"] = "0" * 64  # built, no longer listed
    (root / native.MODULES[0]).write_text(f"# {native.MODULES[0]}\n")
    assert native.fresh(build, root)
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert not native.fresh(build, root)
    (build / native.MANIFEST).write_text("{not json")
    assert not native.fresh(build, root)


def test_a_build_for_another_python_is_not_used(tmp_path: Path) -> None:
    root = sources(tmp_path)
    assert not native.fresh(build_of(tmp_path, root, python="cpython-39 3.9.2"), root)


def test_enable_puts_a_fresh_build_first_and_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = sources(tmp_path)
    build = build_of(tmp_path, root)
    monkeypatch.setattr(native, "sources_root", lambda: root)
    monkeypatch.setattr(native, "native_root", lambda: build)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("SMARTGET_NATIVE", "0")
    path = ["/pure"]
    assert not native.enable(path)
    assert path == ["/pure"]
    monkeypatch.delenv("SMARTGET_NATIVE")
    assert native.enable(path)
    assert path == [str(build / "smartget" / "hub"), "/pure"]
    assert str(build) in sys.path
    (root / native.MODULES[1]).write_text("# edited\n")
    again = ["/pure"]
    assert not native.enable(again)
    assert again == ["/pure"]


def test_this_environment_runs_the_compiled_tracker() -> None:
    """scripts/bootstrap builds it (gcc and Python's headers are among what it installs);
    SMARTGET_NATIVE=0 (scripts/test's second run of the hub's unit tests) turns it off."""
    compiled = [m.__file__ or "" for m in (smartget.hub.tracker, smartget.hub.udptracker)]
    if os.environ.get("SMARTGET_NATIVE") == "0":
        assert all(f.endswith(".py") for f in compiled)
    else:
        assert all(f.endswith(".so") and f.startswith(str(native.native_root())) for f in compiled)
