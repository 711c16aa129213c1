"""Every Python example in README.md runs as written."""
import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# Packages of optional extras (stcm[zarr]), and the stcm modules that need them: an example
# using one runs where it is installed (CI's test extra has them) and is skipped elsewhere.
OPTIONAL = {"numcodecs", "zarr", "xarray", "dask", "distributed"}
NEEDS = {"stcm.zarr": {"numcodecs", "zarr"}}


def _optional_packages(block: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    needed = {m.split(".")[0] for m in modules} & OPTIONAL
    return needed.union(*(NEEDS.get(m, set()) for m in modules))


def test_readme_has_python_examples():
    assert BLOCKS, "README.md should carry runnable Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_examples_run(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    for package in sorted(_optional_packages(block)):
        pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)  # examples write relative paths such as runs/
    exec(compile(block, str(README), "exec"), {})
