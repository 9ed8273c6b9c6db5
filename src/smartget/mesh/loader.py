"""Where a node's apps come from (issue 7, "Node"; issue 17, "MSW").

- the built-ins (``smartget.mesh.apps.logger``, ``console``, ``shell``, ``update``);
- entry points in the group ``smartget.mesh_apps`` naming an :class:`App` subclass or a
  factory (``--app NAME``);
- every module in ``--apps-dir``: one that defines ``create_app()`` (or an ``app``
  object), or an original MSW plugin (it imports MSW's ``forwarder``/``mswp``/``config``
  and starts its thread at import; msw.py runs it as it is).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from smartget.errors import ConfigError
from smartget.mesh.apps import BUILTIN_APPS, ENTRY_POINT_GROUP, App
from smartget.mesh.msw import is_msw_plugin, load_plugin

__all__ = ["load_apps"]

_NATIVE = re.compile(r"^(def create_app\b|app\s*=)", re.MULTILINE)


def _builtin(name: str) -> type[App]:
    module = importlib.import_module(f"smartget.mesh.apps.{name}")
    cls = module.APP
    assert isinstance(cls, type)
    assert issubclass(cls, App)
    return cls


def _instantiate(source: str, obj: object) -> App:
    if isinstance(obj, type) and issubclass(obj, App):
        return obj()
    if isinstance(obj, App):
        return obj
    if callable(obj):
        made = obj()
        if isinstance(made, App):
            return made
    raise ConfigError(f"{source} does not give a smartget.mesh.apps.App")


def _from_dir(apps_dir: Path) -> dict[str, App]:
    apps: dict[str, App] = {}
    for path in sorted(apps_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"cannot read app module {path}: {exc.strerror}") from exc
        if _NATIVE.search(source) is None and is_msw_plugin(source):
            apps[path.stem] = load_plugin(path)  # an original MSW plugin, in its threads
            continue
        spec = importlib.util.spec_from_file_location(f"smartget_mesh_app_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"app module {path} failed to load: {exc!r}") from exc
        factory: Callable[[], object] | object | None = getattr(module, "create_app", None)
        if factory is None:
            factory = getattr(module, "app", None)
        if factory is None:
            raise ConfigError(f"app module {path} defines neither create_app() nor app")
        app = _instantiate(str(path), factory)
        apps[app.name or path.stem] = app
    return apps


def load_apps(names: list[str], apps_dir: Path | None) -> dict[str, App]:
    """The apps to run: ``names`` (built-ins or entry points) plus every module of ``apps_dir``."""
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    apps: dict[str, App] = {}
    for name in names:
        if name in BUILTIN_APPS:
            apps[name] = _builtin(name)()
        elif name in entry_points:
            apps[name] = _instantiate(f"entry point {name}", entry_points[name].load())
        else:
            known = sorted({*BUILTIN_APPS, *entry_points})
            raise ConfigError(f"unknown app {name!r}; built-in or installed: {', '.join(known)}")
    if apps_dir is not None:
        if not apps_dir.is_dir():
            raise ConfigError(f"--apps-dir {apps_dir} is not a directory")
        apps.update(_from_dir(apps_dir))
    return apps
