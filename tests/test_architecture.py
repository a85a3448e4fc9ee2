"""The import rules of docs/architecture.md, enforced: someone writing a check can tell what to import.

The import-linter contracts in pyproject.toml state the rules (plugins import only the plugin API of
agent/, check families are independent, actions use only the shared helpers of checks/, no circles);
the tests here keep those lists honest as the code grows: every module of agent/ is either plugin API
or named engine, every module that defines a check type is a family, and nothing, not even a
function-level import, closes a circle or reaches for another module's private name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from actions import ACTION_TYPES
from checks import CHECK_TYPES

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("agent", "checks", "actions")

PLUGIN_PACKAGE = "agent.plugin"
"""What checks and actions may import from agent/ (with `agent` itself, the version); it imports only itself."""


def _plugin_api(graph: grimp.ImportGraph) -> set[str]:
    return {"agent"} | {m for m in graph.modules if m == PLUGIN_PACKAGE or m.startswith(PLUGIN_PACKAGE + ".")}


def _under(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)




@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Every import of the project, function-level and TYPE_CHECKING ones included."""
    return grimp.build_graph(*PROJECT, cache_dir=None)


@pytest.fixture(scope="module")
def contracts() -> list[dict]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


def _contract(contracts: list[dict], type_: str, source: set[str] | None = None) -> dict:
    return next(c for c in contracts
                if c["type"] == type_ and (source is None or set(c.get("source_modules", ())) == source))


def _project_imports(graph: grimp.ImportGraph, module: str, roots: tuple[str, ...] = PROJECT) -> set[str]:
    return {m for m in graph.find_modules_directly_imported_by(module) if m.split(".")[0] in roots}


def test_architecture_import_contracts_kept():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                               "sys.exit(lint_imports(no_cache=True))"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    report = done.stdout[done.stdout.find("Contracts"):]     # after import-linter's banner
    assert done.returncode == 0, report[-6000:] + done.stderr[-2000:]


def test_architecture_plugins_import_only_the_plugin_api_of_agent(graph):
    api = _plugin_api(graph)
    reached = {
        module: sorted(m for m in _project_imports(graph, module) if m.split(".")[0] == "agent" and m not in api)
        for module in graph.modules if module.split(".")[0] in ("checks", "actions")}
    assert {module: upward for module, upward in reached.items() if upward} == {}


def test_architecture_plugin_api_imports_nothing_above_it(graph):
    api = _plugin_api(graph)
    assert len(api) > 10
    reached = {module: sorted(_project_imports(graph, module) - api) for module in api}
    assert {module: upward for module, upward in reached.items() if upward} == {}


def test_architecture_every_agent_module_is_plugin_api_or_named_engine(graph, contracts):
    """A new module of agent/ is a decision: it goes into agent/plugin/, into one of the engine's packages, or
    joins the engine list of the contracts as a flat module of agent/."""
    engine = set(_contract(contracts, "forbidden", {"checks", "actions"})["forbidden_modules"])
    api = _plugin_api(graph)
    modules = {m for m in graph.modules if m.split(".")[0] == "agent"}
    assert not any(_under(m, engine) for m in api)
    assert sorted(m for m in modules - api if not _under(m, engine)) == []
    assert sorted(e for e in engine if e not in modules) == []
    api_contract = _contract(contracts, "forbidden", {PLUGIN_PACKAGE})
    assert set(api_contract["forbidden_modules"]) == engine | {"checks", "actions"}
    on_top = _contract(contracts, "forbidden", engine - {"agent.cli"})
    assert on_top["forbidden_modules"] == ["agent.cli"]


def test_architecture_the_folder_says_the_layer():
    """agent/ holds the engine's flat modules and its packages; the plugin API and the CLI are packages of their own."""
    packages = sorted(p.name for p in (REPO / "agent").iterdir() if (p / "__init__.py").exists())
    assert packages == ["cli", "config", "http", "plugin", "reports", "store"]


def test_architecture_every_module_defining_a_check_type_is_an_independent_family(contracts):
    families = next(set(c["modules"]) for c in contracts if c["type"] == "independence" and
                    all(m.startswith("checks.") for m in c["modules"]))
    defining = {cls.__module__ for cls in CHECK_TYPES.values()}
    assert sorted(defining - families) == [], "add the new family to the independence contract in pyproject.toml"
    assert sorted(families - defining) == [], "a helper module shared by families is not itself a family"
    assert set(_contract(contracts, "forbidden", {"actions"})["forbidden_modules"]) == families


def test_architecture_every_module_defining_an_action_type_is_an_independent_family(contracts):
    independent = [set(c["modules"]) for c in contracts if c["type"] == "independence"]
    defining = {cls.__module__ for cls in ACTION_TYPES.values()}
    assert defining in independent, "add the new action family to the independence contract in pyproject.toml"


def _cycles(graph: grimp.ImportGraph, roots: tuple[str, ...] = PROJECT) -> list[list[str]]:
    """The import circles among modules (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:          # iterative Tarjan: the graph is deep enough for recursion limits
        work = [(start, iter(sorted(_project_imports(graph, start, roots))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(_project_imports(graph, nxt, roots)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_architecture_no_import_circle_across_the_project(graph):
    """Across packages too (agent ↔ checks), and through function-level imports."""
    assert _cycles(graph) == []


def test_architecture_graph_holds_function_level_imports(graph):
    """The rules cover lazy imports: the heartbeat check opens the store inside `run`."""
    details = graph.get_import_details(importer="checks.heartbeat", imported="agent.plugin.storefile")
    assert details and details[0]["line_contents"].startswith("from agent.plugin.storefile import")


def test_architecture_cycle_finder_finds_a_circle_and_only_it():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c", line_number=1, line_contents="import a.c")
    graph.add_import(importer="a.c", imported="a.b", line_number=9, line_contents="from a.b import x")
    graph.add_import(importer="a.d", imported="a.b", line_number=1, line_contents="import a.b")
    assert _cycles(graph, ("a",)) == [["a.b", "a.c"]]


def _private_imports(own: str, source: str) -> list[str]:
    """In module `own`, `from X import _name` or `module._name` of an imported project module X (not `own`)."""
    tree = ast.parse(source, own)
    modules: dict[str, str] = {}            # local name → project module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            for alias in node.names:
                if node.module != own and alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{own}:{node.lineno} from {node.module} import {alias.name}")
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{own}:{node.lineno} {modules[node.value.id]}.{node.attr}")
    return found


def test_architecture_no_plugin_module_imports_a_private_name_of_another():
    found = [hit for package in ("checks", "actions") for path in sorted((REPO / package).glob("*.py"))
             for hit in _private_imports(f"{package}.{path.stem}", path.read_text())]
    assert found == []


def test_architecture_private_import_finder_sees_both_spellings():
    source = ("from checks.postgres import _is_down, describe_error\nfrom agent.plugin import children\n"
              "def run():\n    from checks.backup import _cap\n    return children._table\n")
    assert _private_imports("checks.probe", source) == [
        "checks.probe:1 from checks.postgres import _is_down", "checks.probe:4 from checks.backup import _cap",
        "checks.probe:5 agent.plugin.children._table"]
    assert _private_imports("checks.postgres", "from checks.postgres import _own\n") == []
