"""The package layers, read from the source (lazy imports included): shared never imports
services, and shared.models (serving) never imports shared.training (which builds on it)."""

import ast
from pathlib import Path

import pytest
from pipeline_helpers import REPO


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("shared", "services"),
    ("shared/models", "shared.training"),
])
def test_a_lower_layer_never_imports_a_higher_one(package, forbidden):
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path)
                                            if m == forbidden or m.startswith(forbidden + "."))
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {path: found for path, found in offenders.items() if found} == {}
