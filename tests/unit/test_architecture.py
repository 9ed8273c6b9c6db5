"""The shape of the package, checked: no import cycles, and sans-IO cores that stay so.

Read from the source with ``ast`` (nothing is imported), so a violation names the
module and the line. ARCHITECTURE.md draws the parts these rules keep apart.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "smartget"

# Protocol cores (STYLE.md): bytes, events and ``now`` in; bytes, events and deadlines
# out. They may import other smartget modules only if those obey the same rule.
CORES = (
    "smartget.errors",
    "smartget.ratelimit",
    "smartget.failover",
    "smartget.hub.registry",
    "smartget.hub.textproto",
    "smartget.hub.tracker",
    "smartget.hub.udptracker",
    "smartget.hub.collector",
    "smartget.hub.commands",
    "smartget.hub.state.keys",
    "smartget.hub.state.lease",
    "smartget.hub.state.functions",
    "smartget.hub.state.swarmlog",
    "smartget.hub.jobs.core",
    "smartget.hub.jobs.model",
    "smartget.hub.console.session",
    "smartget.hub.console.history",
    "smartget.hub.console.drain",
    "smartget.hub.console.views",
    "smartget.hub.relay.core",
    "smartget.hub.relay.xmlrpc",
    "smartget.hub.relay.methods",
    "smartget.hub.relay.outbox",
    "smartget.dht.krpc",
    "smartget.dht.routing",
    "smartget.dht.core",
    "smartget.dht.tokens",
    "smartget.dht.peers",
    "smartget.dht.lookup",
    "smartget.dht.sources",
    "smartget.node.tasks",
    "smartget.node.paths",
    "smartget.node.status",
    "smartget.node.policy",
    "smartget.node.report",
    "smartget.node.settings",
    "smartget.node.fetchpolicy",
    "smartget.node.cache",
    "smartget.node.magnet",
    "smartget.hub.relay.dump",
    "smartget.hub.relay.records",
    "smartget.mesh.datapack",
    "smartget.mesh.router",
    "smartget.mesh.policy",
    "smartget.mesh.session",
    "smartget.mesh.registry",
    "smartget.mesh.replay",
    "smartget.transcode.ffmpeg",
    "smartget.transcode.messages",
    "smartget.transcode.plan",
)

# What a core must not import, directly or through another smartget module.
IO_MODULES = frozenset(
    {"asyncio", "socket", "ssl", "time", "sqlite3", "httpx", "libtorrent", "selectors"}
)


@dataclass(frozen=True)
class Import:
    target: str  # a smartget module, or a top-level third-party/stdlib name
    line: int
    runtime: bool  # False under ``if TYPE_CHECKING:``
    top_level: bool  # False inside a function (a deferred import)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """A smartget name as the module that defines it (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, runtime: bool, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, False, top)
                for stmt in child.orelse:
                    visit_stmt(stmt, runtime, top)
                continue
            visit_stmt(child, runtime, top)

    def visit_stmt(stmt: ast.AST, runtime: bool, top: bool) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                found.append(_target(alias.name, stmt.lineno, runtime, top))
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(stmt.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in stmt.names:
                full = f"{base}.{alias.name}"
                name = full if _resolve(full) == full else base
                found.append(_target(name, stmt.lineno, runtime, top))
        else:
            inner = top and not isinstance(
                stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(stmt, runtime, inner)

    visit(tree, True, True)
    return found


def _target(name: str, line: int, runtime: bool, top: bool) -> Import:
    if name == PACKAGE or name.startswith(PACKAGE + "."):
        return Import(_resolve(name), line, runtime, top)
    return Import(name.partition(".")[0], line, runtime, top)


IMPORTS = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {
        m: sorted({i.target for i in imps if i.target in MODULES and i.target != m})
        for m, imps in IMPORTS.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_the_package_has_no_import_cycles() -> None:
    """Every import counts, deferred and TYPE_CHECKING ones too: a cycle is a knot
    in the design even when Python can load it."""
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _io_reached(core: str) -> list[str]:
    """Each I/O module a core reaches at run time, with the chain of imports to it."""
    reached: list[str] = []
    seen = {core}
    queue = [(core, [core])]
    while queue:
        module, chain = queue.pop(0)
        for imp in IMPORTS[module]:
            if not imp.runtime:
                continue
            if imp.target in IO_MODULES:
                reached.append(" -> ".join([*chain, imp.target]) + f" (line {imp.line})")
            elif imp.target in MODULES and imp.target not in seen:
                seen.add(imp.target)
                queue.append((imp.target, [*chain, imp.target]))
    return reached


@pytest.mark.parametrize("core", CORES)
def test_a_core_imports_no_io(core: str) -> None:
    assert core in MODULES, f"{core} is listed as a core but does not exist"
    assert not _io_reached(core), f"{core} is not sans-IO:\n" + "\n".join(_io_reached(core))


def test_the_checks_see_what_they_claim() -> None:
    """The rules above would catch a violation: they find known imports."""
    assert any(i.target == "asyncio" for i in IMPORTS["smartget.hub.app"])
    assert _io_reached("smartget.hub.app"), "hub.app does I/O; the walk must see it"
    assert any(i.target == "smartget.hub.registry" for i in IMPORTS["smartget.hub.commands"])
