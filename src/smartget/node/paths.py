"""Confinement of every path that comes from a request to the node's roots.

A request names files four ways (seed 003): the path of ``fileurl`` or
``torrentfileurl`` (stored "under wwwroot at the URL's path"), ``filename`` (a full
path), and ``wwwroot`` (another root for this task). Each is checked here before
anything is touched: a path is accepted only if, with every symlink resolved, it is the
root or lies below it, and the root itself is the node's wwwroot or one of its extra
roots. ``..`` components, absolute paths elsewhere and symlinks leading out raise
:class:`~smartget.errors.UnsafePathError`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from smartget.errors import UnsafePathError

__all__ = ["Roots", "prune_empty_dirs", "remove_file", "url_relpath"]

MAX_COMPONENTS = 64


def url_relpath(url: str) -> PurePosixPath:
    """The path of an http(s) URL as a relative path: ``http://h/a/b.pdf`` -> ``a/b.pdf``.

    Percent-escapes are decoded first, so ``%2e%2e`` is caught as ``..``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UnsafePathError(f"expected an http:// or https:// URL, got {url[:200]!r}")
    path = unquote(parts.path)
    components = [c for c in path.split("/") if c not in ("", ".")]
    if not components:
        raise UnsafePathError(f"URL {url[:200]!r} has no file path (give args.filename)")
    _check_components(components, url)
    return PurePosixPath(*components)


def _check_components(components: list[str], original: str) -> None:
    if len(components) > MAX_COMPONENTS:
        raise UnsafePathError(f"path {original[:200]!r} has more than {MAX_COMPONENTS} parts")
    for part in components:
        if part == ".." or "\x00" in part or "\\" in part:
            raise UnsafePathError(f"path {original[:200]!r} has a '..', NUL or backslash part")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


@dataclass(frozen=True)
class Roots:
    """The node's wwwroot and extra roots, each as its real path (symlinks resolved)."""

    wwwroot: Path
    extra: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def create(cls, wwwroot: Path, extra: tuple[Path, ...] = ()) -> Roots:
        """The roots, made if missing (``--wwwroot`` given more than once: ``extra``)."""
        for root in (wwwroot, *extra):
            root.mkdir(parents=True, exist_ok=True)
        real = Path(os.path.realpath(wwwroot))
        others = (Path(os.path.realpath(p)) for p in extra)
        return cls(real, tuple(dict.fromkeys(p for p in others if p != real)))

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.wwwroot, *self.extra)

    def root_for(self, wwwroot: str) -> Path:
        """The root of a task: ``args.wwwroot`` if given (it must be, or lie in, a root)."""
        if not wwwroot:
            return self.wwwroot
        real = self._real(wwwroot)
        if not any(_inside(real, root) for root in self.all):
            raise UnsafePathError(
                f"wwwroot {wwwroot[:200]!r} is outside the node's roots "
                f"({', '.join(str(r) for r in self.all)})"
            )
        return real

    def under(self, root: Path, relpath: PurePosixPath | str) -> Path:
        """``root / relpath``, refused if it resolves outside ``root``."""
        rel = PurePosixPath(relpath)
        if rel.is_absolute():
            raise UnsafePathError(f"expected a relative path, got {str(rel)[:200]!r}")
        _check_components(list(rel.parts), str(rel))
        real = Path(os.path.realpath(root / rel))
        if not _inside(real, root) or real == root:
            raise UnsafePathError(f"{str(rel)[:200]!r} leads outside {root}")
        return real

    def filename(self, root: Path, filename: str) -> Path:
        """``args.filename``: absolute (inside a root) or relative to ``root``."""
        if not os.path.isabs(filename):
            return self.under(root, filename)
        _check_components(filename.split("/"), filename)
        real = self._real(filename)
        if not any(_inside(real, r) and real != r for r in (root, *self.all)):
            raise UnsafePathError(f"filename {filename[:200]!r} is outside the node's roots")
        return real

    def containing(self, path: Path) -> Path | None:
        """The deepest root that holds ``path``, or None."""
        roots = [r for r in self.all if _inside(path, r)]
        return max(roots, key=lambda r: len(r.parts)) if roots else None

    @staticmethod
    def _real(text: str) -> Path:
        if "\x00" in text:
            raise UnsafePathError("path holds a NUL character")
        return Path(os.path.realpath(text))


def prune_empty_dirs(start: Path, root: Path) -> list[Path]:
    """Remove ``start`` and its parents while empty, stopping below ``root`` (seed 003, delete)."""
    removed = []
    current = start
    while _inside(current, root) and current != root:
        try:
            current.rmdir()
        except OSError:
            break
        removed.append(current)
        current = current.parent
    return removed


def remove_file(path: Path) -> bool:
    """Unlink a file; False if it was already gone."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False
