"""Confinement of request paths to the node's roots."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import UnsafePathError
from smartget.node.files import resolve
from smartget.node.paths import Roots, prune_empty_dirs, url_relpath


def test_url_relpath() -> None:
    assert url_relpath("http://h:80/fhs/pub/fhs-2.3.pdf") == PurePosixPath("fhs/pub/fhs-2.3.pdf")
    assert url_relpath("https://h/a%20b/./c?x=1#y") == PurePosixPath("a b/c")
    for bad in (
        "http://h",
        "http://h/",
        "ftp://h/a",
        "/a/b",
        "http://h/a/../../b",
        "http://h/%2e%2e/x",
    ):
        with pytest.raises(UnsafePathError):
            url_relpath(bad)


@given(st.text(max_size=80))
def test_url_relpath_never_escapes(text: str) -> None:
    try:
        rel = url_relpath("http://h/" + text)
    except UnsafePathError:
        return
    assert not rel.is_absolute()
    assert ".." not in rel.parts


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    (tmp_path / "outside").mkdir()
    (tmp_path / "extra").mkdir()
    made = Roots.create(tmp_path / "www", (tmp_path / "extra",))
    os.symlink(tmp_path / "outside", made.wwwroot / "out")
    os.symlink(made.wwwroot / "in", made.wwwroot / "loop")
    return made


def test_roots(roots: Roots, tmp_path: Path) -> None:
    www = roots.wwwroot
    assert roots.root_for("") == www
    assert roots.root_for(str(tmp_path / "extra")) == tmp_path / "extra"
    assert roots.root_for(str(www / "sub")) == www / "sub"
    assert roots.under(www, "a/b") == www / "a" / "b"
    assert roots.filename(www, str(www / "x")) == www / "x"
    assert roots.filename(www, str(tmp_path / "extra" / "y")) == tmp_path / "extra" / "y"
    for call in (
        lambda: roots.root_for("/etc"),
        lambda: roots.root_for(str(tmp_path / "outside")),
        lambda: roots.under(www, "../x"),
        lambda: roots.under(www, "/etc/passwd"),
        lambda: roots.under(www, "out/x"),
        lambda: roots.under(www, ""),
        lambda: roots.filename(www, "/etc/passwd"),
        lambda: roots.filename(www, str(www)),
        lambda: roots.filename(www, "out/../../x"),
        lambda: roots.filename(www, "a\x00b"),
    ):
        with pytest.raises(UnsafePathError):
            call()


def test_prune(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (tmp_path / "a" / "keep").write_text("x")
    assert prune_empty_dirs(deep, tmp_path) == [deep, deep.parent]
    assert (tmp_path / "a").exists()
    assert prune_empty_dirs(tmp_path, tmp_path) == []


def test_file_server_resolve(roots: Roots, tmp_path: Path) -> None:
    www = roots.wwwroot
    (www / "d").mkdir()
    (www / "d" / "f.bin").write_bytes(b"x")
    (www / "d" / ".f.bin.1234.part").write_bytes(b"x")
    (tmp_path / "outside" / "secret").write_text("s")
    assert resolve(www, "/d/f.bin") == www / "d" / "f.bin"
    for bad in ("/", "/d", "/d/", "/../x", "/%2e%2e/x", "/out/secret", "/d/.f.bin.1234.part"):
        assert resolve(www, bad) is None
