"""Which way the imports point: read from the source with `ast`, so a wrong arrow fails here.

- leaves (the flat modules) import only leaves;
- journal/ and qonto/ import leaves and themselves;
- flow/ imports leaves, journal/, qonto/ and earlier flow/ modules (the order below);
- service.py composes: never commands/ or testing/;
- only commands/demo and the emulator's entry point import testing/;
- pure modules import nothing that reaches the outside world.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon"

# flow/ in layers: a module imports only modules of earlier layers (or none of flow/).
# Books and records come first: every stage reports to the books; stages hand files
# on to later ones and never reach back.
FLOW_LAYERS = [
    {"records"},
    {"books"},
    {"discover", "settle", "examine", "facturx", "batcher", "orgs", "filing", "lifecycle",
     "rules"},
    {"decide", "reading"},
    {"upload"},
    {"intake"},
    {"reconcile", "einvoice"},
    {"progress"},
    {"pipeline"},
]
# Modules with no I/O of their own: unit-testable without a folder, a socket or a file.
PURE = {
    "daemon.flow.records", "daemon.flow.facturx", "daemon.flow.batcher", "daemon.flow.books",
    "daemon.flow.rules", "daemon.backoff", "daemon.redact", "daemon.identity", "daemon.timing",
}
EDGES = {
    "aiohttp", "aiosqlite", "watchfiles", "sqlite3", "socket", "subprocess", "multiprocessing",
    "daemon.journal", "daemon.qonto.client", "daemon.mover", "daemon.watcher", "daemon.parsers",
    "daemon.notify", "daemon.lock", "daemon.validator",
}
COMPOSERS = {"daemon.service", "daemon.cli", "daemon.__main__", "daemon.emulator"}
# A leaf grown into a few modules is still a leaf.
LEAF_PACKAGES = {"config", "rulesets"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from . import x` and `from .. import x` name modules too.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}
KNOWN = set(MODULES)


def ours(imported: set[str]) -> set[str]:
    """The package's own modules among `imported` (names of attributes dropped)."""
    return {i for i in imported if i in KNOWN}


def family(name: str) -> str:
    """'leaf', or the sub-package a module belongs to, or the composer's own name."""
    parts = name.split(".")
    if name in COMPOSERS:
        return name
    if name == "daemon" or parts[1] in LEAF_PACKAGES:
        return "leaf"
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return "leaf"
    return parts[1]


def test_the_walk_sees_the_package():
    assert {"daemon.flow.books", "daemon.journal.commits", "daemon.qonto.client",
            "daemon.service", "daemon.config"} <= KNOWN
    assert "daemon.flow.books" in ours(MODULES["daemon.flow.settle"])


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if family(n) == "leaf"))
def test_leaves_import_only_leaves(name):
    wrong = {i for i in ours(MODULES[name]) if family(i) != "leaf" and i != "daemon"}
    assert not wrong, f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if family(n) in ("journal", "qonto")))
def test_journal_and_qonto_import_only_leaves_and_themselves(name):
    wrong = {i for i in ours(MODULES[name]) if family(i) not in ("leaf", family(name))}
    assert not wrong, f"{name} imports {sorted(wrong)}"


def flow_layer(name: str) -> int:
    short = name.split(".")[2]
    return next(n for n, layer in enumerate(FLOW_LAYERS) if short in layer)


def test_every_flow_module_has_a_layer():
    flow = {n.split(".")[2] for n in KNOWN if family(n) == "flow" and n != "daemon.flow"}
    assert flow == set().union(*FLOW_LAYERS)


@pytest.mark.parametrize(
    "name", sorted(n for n in KNOWN if family(n) == "flow" and n != "daemon.flow")
)
def test_flow_arrows_point_one_way(name):
    for imported in ours(MODULES[name]):
        match family(imported):
            case "leaf" | "journal" | "qonto":
                continue
            case "flow":
                if imported == "daemon.flow":
                    continue
                assert flow_layer(imported) < flow_layer(name), f"{name} imports {imported}"
            case other:
                raise AssertionError(f"{name} imports {imported} ({other})")


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_only_the_demo_and_the_emulator_entry_import_testing(name):
    if family(name) == "testing" or name in ("daemon.commands.demo", "daemon.emulator"):
        return
    wrong = {i for i in ours(MODULES[name]) if family(i) == "testing"}
    assert not wrong, f"{name} imports {sorted(wrong)}"


def test_the_service_composes_and_commands_stay_apart():
    for name in ("daemon.service",):
        wrong = {i for i in ours(MODULES[name]) if family(i) in ("commands", "testing")}
        assert not wrong, f"{name} imports {sorted(wrong)}"
    for name in (n for n in KNOWN if family(n) in ("flow", "journal", "qonto")):
        wrong = {i for i in ours(MODULES[name]) if family(i) == "commands" or i in COMPOSERS}
        assert not wrong, f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_import_no_edge(name):
    wrong = {
        i for i in MODULES[name] if any(i == e or i.startswith(e + ".") for e in EDGES)
    }
    assert not wrong, f"{name} imports {sorted(wrong)}"
