"""The import graph of `gepa_action`: no cycle, and no module importing one of a higher layer.

A cycle hidden behind a function-level import works until someone moves the import, and a low module
that reaches up (the model client importing the YAML loader) drags the whole tool into every corner.
The check reads the source with `ast`, so it sees every import the interpreter could execute:

* imports inside functions count (hiding a cycle there is what this test exists to catch);
* imports under `if TYPE_CHECKING:` count too. They never run, but they are a dependency all the same:
  a type that a low module must name from a high one belongs lower. One rule, no exceptions to audit.

The layers, lowest first. They follow what each module needs rather than the order sketched in the
design notes in two places, because the code cannot be arranged otherwise:

* `workspace` (the loader) sits above `templates`, `evals`, `lm` and `metrics`, since loading gepa.yaml
  means loading the templates and eval sets it names and building its metrics; the plain config types
  it fills in live at the bottom, in `config`.
* `tune` sits above `report` and `render`: a run ends by building its report and writing report.md.
  `runs` and `scoring` (the `eval` flow) sit below `report`, which may read them.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gepa_action"

#: Each entry names modules or folders under gepa_action/ ("lm" covers lm/ and all in it); the longest
#: entry that names a module or one of its folders decides ("render.text" before "render").
LAYERS: tuple[tuple[str, ...], ...] = (
    # plain types and helpers that know nothing of the tool's flow
    # render.text is the shared string formatting (fences, escaping, tables; standard library only): the
    # reflection prompt fences its examples with it, so it sits here although the rest of render/ is high
    ("", "config", "cost_model", "errors", "paths", "yamlsrc", "sandbox", "watchdog", "signals", "stats",
     "render.text"),
    ("templates", "evals", "guidance"),  # inputs read from the repository (guidance: gepa.guidance.yaml)
    ("lm", "cache"),  # the model client, its cache, the local servers and lm/session.py
    ("metrics",),
    ("workspace",),  # gepa.yaml loaded into config types, templates, eval sets and metrics
    ("runner",),  # one candidate on one instance
    ("engine",),
    ("runs", "scoring", "run_origin", "estimate"),  # run folders, where a run started, `eval`, what a run may spend
    ("report",),  # the report model and its builder
    ("render",),  # report.md, the PR body, the job summary, terminal output
    ("tune",),
    ("baseline", "hooks", "action", "github", "gitops", "gha", "scaffold", "watch", "github_issues", "watch_flow",
     "matrix", "guidance_sync"),
    ("cli",),
)


def module_name(root: Path, path: Path) -> str:
    """`pkg/lm/client.py` -> "pkg.lm.client"; a package's `__init__.py` is the package itself."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules of the package that `name` imports anywhere in its source (see the module docstring)."""
    known = set(known)
    root = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg.mod import thing` the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target != root and not target.startswith(root + "."):
                continue
            while target not in known and "." in target:  # `import pkg.mod.attr`-like spellings
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = modules_of(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(_cycle_through(sorted(group), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _cycle_through(group: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A concrete path start -> ... -> start inside one strongly connected group (for the message)."""
    members, start = set(group), group[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return group  # unreachable for a real strongly connected group


def layer_of(name: str, layers: Sequence[tuple[str, ...]]) -> int | None:
    """The layer of a module: the longest table entry naming it or a folder it is in ("" is the package)."""
    inner = name.split(".", 1)[1] if "." in name else ""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for number, members in enumerate(layers):
        for entry in members:
            names_it = entry == inner or (entry != "" and inner.startswith(entry + "."))
            if names_it and (best is None or len(entry) > best[0]):
                best = (len(entry), number)
    return None if best is None else best[1]


def layer_problems(graph: Mapping[str, set[str]], layers: Sequence[tuple[str, ...]]) -> list[str]:
    """One line per module missing from the table and per import from a lower layer to a higher one."""
    problems = [f"{name} is in no layer: add it to LAYERS in tests/test_layers.py"
                for name in sorted(graph) if layer_of(name, layers) is None]
    for name in sorted(graph):
        mine = layer_of(name, layers)
        for target in sorted(graph[name]):
            theirs = layer_of(target, layers)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{name} (layer {mine}) imports {target} (layer {theirs}), a higher layer")
    return problems


# ------------------------------------------------------------------------------------------- the package


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(PACKAGE))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_a_higher_layer() -> None:
    problems = layer_problems(import_graph(PACKAGE), LAYERS)
    assert problems == [], "\n".join(problems)


def test_the_graph_sees_the_imports_that_matter() -> None:
    """Guards the checker against reading nothing: known edges of each kind are in the graph."""
    graph = import_graph(PACKAGE)
    assert "gepa_action.lm.client" in graph["gepa_action.lm.session"]  # top-level, relative, two dots deep
    assert "gepa_action.lm.local_model" in graph["gepa_action.lm.session"]  # `from . import x` in a function
    assert "gepa_action.workspace" in graph["gepa_action.runner"]  # under `if TYPE_CHECKING:`
    assert "gepa_action.config" in graph["gepa_action.engine.budget"]  # `from ..config import`
    assert "gepa_action.workspace" in graph["gepa_action.cli"]  # inside a method
    assert len(graph) > 50


def test_the_old_cycle_put_back_into_a_copy_is_found(tmp_path: Path) -> None:
    """The cycle this layout removed (client -> loader -> metrics -> client), injected into a copy."""
    copy = tmp_path / "gepa_action"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    client = copy / "lm" / "client.py"
    client.write_text(client.read_text() + "\n\ndef _config_file():\n    from ..workspace import find_config\n")
    metrics = copy / "metrics" / "base.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _client():\n    from ..lm.client import LMClient\n")
    graph = import_graph(copy)
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and {"gepa_action.lm.client", "gepa_action.workspace"} <= set(cycles[0])
    assert "gepa_action.lm.client (layer 2) imports gepa_action.workspace (layer 4), a higher layer" \
        in layer_problems(graph, LAYERS)


# ------------------------------------------------------------------------ the checker on made-up packages


def _package(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_a_cycle_hidden_in_a_function_is_found_and_named(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "low.py": "def later():\n    from .mid import thing\n",
        "mid.py": "from . import top\nthing = 1\n",
        "top.py": "import pkg.low\n",
        "alone.py": "from .low import later\n",
    })
    assert find_cycles(import_graph(pkg)) == [["pkg.low", "pkg.mid", "pkg.top", "pkg.low"]]


def test_a_cycle_through_type_checking_counts(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "sub/__init__.py": "",
        "sub/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import B\n",
        "b.py": "from .sub.a import x\n",
    })
    assert find_cycles(import_graph(pkg)) == [["pkg.b", "pkg.sub.a", "pkg.b"]]


def test_an_acyclic_package_passes(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"a.py": "from . import b\n", "b.py": "import os\nfrom .c import x\n", "c.py": "x = 1\n"})
    assert find_cycles(import_graph(pkg)) == []


def test_an_import_from_a_lower_layer_to_a_higher_one_is_named(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "config.py": "def f():\n    from .lm.client import C\n",
        "lm/__init__.py": "",
        "lm/client.py": "from ..config import f\nC = 1\n",
        "cli.py": "from .lm import client\nfrom .config import f\n",
        "stray.py": "",
    })
    layers = (("", "config"), ("lm",), ("cli",))
    assert layer_problems(import_graph(pkg), layers) == [
        "pkg.stray is in no layer: add it to LAYERS in tests/test_layers.py",
        "pkg.config (layer 0) imports pkg.lm.client (layer 1), a higher layer",
    ]


@pytest.mark.parametrize("line", ["import pkg.b as alias", "from pkg import b", "from pkg.b import thing",
                                  "from . import b", "from .b import thing"])
def test_every_spelling_of_an_import_is_an_edge(tmp_path: Path, line: str) -> None:
    pkg = _package(tmp_path, {"a.py": line + "\n", "b.py": "thing = 1\n"})
    assert import_graph(pkg)["pkg.a"] == {"pkg.b"}
