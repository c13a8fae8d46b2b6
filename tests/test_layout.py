"""The house's structure: no import cycles, no module importing another's private names, and
no stage folder importing another stage (they share only schemas/ and the leaf modules)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pipelines": "copydesk.pipelines", "transforms": "copydesk.transforms", "schemas": "copydesk.schemas"}
STAGES = ("kafka", "parse", "fetch", "extract", "dedup")  # folders under transforms/


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "demo_site" in path.parts:
                continue
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every copydesk import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("copydesk."):
            mod = node.module
            names = []
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in MODULES:
                    found.append((sub, []))
                else:
                    names.append(a.name)
            if names:
                found.append((mod, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("copydesk.")]
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {dep for dep, _ in _imports(p) if dep in MODULES and dep != m} for m, p in MODULES.items()}


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "transforms" and parts[2] in STAGES else None


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules() -> None:
    bad = [f"{m}: {dep}.{n}" for m, p in MODULES.items() for dep, names in _imports(p)
           for n in names if n.startswith("_") and dep != m]
    assert not bad, "private names imported from other modules:\n" + "\n".join(bad)


def test_stages_import_no_other_stage() -> None:
    bad = []
    for m, deps in _graph().items():
        s = _stage(m)
        if s is None:
            continue
        for d in deps:
            ds = _stage(d)
            if d.startswith("copydesk.pipelines") or (ds is not None and ds != s):
                bad.append(f"{m} -> {d}")
    assert not bad, "a stage imports another stage (or the pipelines):\n" + "\n".join(sorted(bad))
