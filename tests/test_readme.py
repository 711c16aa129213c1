"""Every Python example in README.md runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md should carry runnable Python examples"
    monkeypatch.chdir(tmp_path)  # examples write relative paths such as runs/
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
