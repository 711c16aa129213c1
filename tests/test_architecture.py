"""Imports point one way: kernels <- models <- export <- runtime (stcm/ holds shared basics)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "kernels": ("stcm",),
    "models": ("stcm.export", "stcm.runtime", "stcm.cli", "stcm.kernels"),
    "export": ("stcm.runtime", "stcm.cli"),
    "runtime": ("stcm.cli", "stcm.models.train", "stcm.models.data", "stcm.models.revisit"),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if name == f"stcm.{folder}" or name.startswith(f"stcm.{folder}."):
                continue  # a package may import itself
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)
