"""Imports point one way, and the engine path needs neither torch nor the training code.

    stcm/ (shared basics and the engine contract: config, contexts, bands, quality, manifest,
           tables; NumPy only)
    kernels/   <- runtime/          (the per-step glue: NumPy reference, CuPy twins)
    models/    <- export/ <- runtime/backends/torch_backend (checkpoints only)
    evaluation/ uses the runtime; only the CLI imports it
    stcm/zarr.py (numcodecs and zarr) adapts the runtime's public API; nothing imports it
"""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "kernels": ("stcm",),  # self-contained: NumPy and CuPy only
    "models": ("stcm.export", "stcm.runtime", "stcm.cli", "stcm.kernels", "stcm.evaluation"),
    "export": ("stcm.runtime", "stcm.cli", "stcm.evaluation"),
    "runtime": ("stcm.cli", "stcm.evaluation", "stcm.models.train", "stcm.models.data",
                "stcm.models.revisit"),
    "evaluation": ("stcm.cli",),
}
# The engine contract in stcm/: read by the runtime, written by export, NumPy only.
CONTRACT = ("config", "contexts", "bands", "quality", "manifest", "tables", "shift_tables",
            "errors", "atomic", "digest")
# Runtime modules that may import torch or stcm.models at module level: the backends that
# run a checkpoint's modules or own GPU memory through torch. Everything else in runtime/
# is on the onnxruntime path.
TORCH_MODULES = {"runtime/backends/torch_backend.py", "runtime/backends/cuda_graphs.py",
                 "runtime/backends/tensorrt_backend.py"}
# Adapters in stcm/ over the runtime's public API, each needing an optional extra; an engine
# runs through them without torch, and ``import stcm`` needs none of their packages.
ADAPTERS = {"stcm/zarr.py": ("numcodecs", "zarr")}


def _imports(path: Path, top_level_only: bool = False):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_one_way(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if _under(name, (f"stcm.{folder}",)):
                continue  # a package may import itself
            if _under(name, FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_engine_contract_imports_only_numpy_and_basics():
    allowed = ("__future__", "numpy", "safetensors", "json", "os", "math", "dataclasses",
               "pathlib", "hashlib", "tempfile", "contextlib", "typing")
    bad = []
    for name in CONTRACT:
        path = ROOT / "stcm" / f"{name}.py"
        for module in _imports(path):
            if not (_under(module, allowed) or _under(module, [f"stcm.{n}" for n in CONTRACT])):
                bad.append(f"stcm/{name}.py imports {module}")
    assert not bad, "\n".join(bad)


def test_only_the_torch_backends_import_torch_or_models_at_module_level():
    bad = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in TORCH_MODULES:
            continue
        for name in _imports(path, top_level_only=True):
            if _under(name, ("torch", "stcm.models", "stcm.export")):
                bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_adapters_import_neither_torch_nor_the_training_code_at_module_level():
    bad = [f"{rel} imports {name}" for rel in ADAPTERS
           for name in _imports(ROOT / rel, top_level_only=True)
           if _under(name, ("torch", "stcm.models", "stcm.export", "stcm.evaluation"))]
    assert not bad, "\n".join(bad)


def test_nothing_of_stcm_imports_an_adapter_and_import_stcm_needs_no_extra():
    names = {"stcm." + Path(rel).stem for rel in ADAPTERS}
    bad = [f"{path.relative_to(ROOT)} imports {name}"
           for folder in ("stcm", *FORBIDDEN) for path in sorted((ROOT / folder).rglob("*.py"))
           if str(path.relative_to(ROOT)) not in ADAPTERS
           for name in _imports(path) if _under(name, names)]
    assert not bad, "\n".join(bad)
    extras = sorted({p for packages in ADAPTERS.values() for p in packages})
    code = (f"import sys, stcm, stcm.runtime.codec; loaded = [p for p in {extras!r} "
            "if p in sys.modules]; assert not loaded, loaded")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_runtime_reaches_the_kernels():
    users = [p.name for p in (ROOT / "runtime").rglob("*.py")
             if any(_under(n, ("stcm.kernels",)) or n == "stcm" for n in _imports(p))]
    assert {"scheduler.py", "wavefront.py"} <= set(users)


BLOCKED_RUN = r"""
import sys, time
class Block:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch" or name.startswith("stcm.models") \
                or name.startswith("stcm.export"):
            raise ImportError("blocked by the test: " + name)
sys.meta_path.insert(0, Block())
start = time.perf_counter()
import numpy as np
from stcm.runtime.codec import Codec
codec = Codec(engine=sys.argv[1])
started = time.perf_counter() - start
image = np.load(sys.argv[2])
data = codec.compress(image, 0.5)
assert codec.decompress(data).shape == image.shape
assert codec.decompress(open(sys.argv[3], "rb").read()).shape == image.shape
print(f"{started:.3f}")
"""


def test_onnxruntime_path_runs_with_torch_and_models_blocked(tmp_path):
    import torch

    from stcm.config import get_config
    from stcm.export.onnx import export_engine
    from stcm.models.codec import STCM
    from stcm.runtime.codec import Codec

    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    export_engine(model, tmp_path / "engine", progress=False)
    image = (np.random.default_rng(0).random((3, 48, 64)) * 255).astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    # A stream written by the torch backend decodes there too (exact entropy path).
    (tmp_path / "torch.stcm").write_bytes(Codec(model).compress(image, 0.5))
    out = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(tmp_path / "engine"),
                          str(tmp_path / "image.npy"), str(tmp_path / "torch.stcm")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    print(f"Codec(engine=...) started in {out.stdout.strip()} s without torch")


def test_constants_on_both_sides_of_the_torch_boundary_agree():
    """The container's geometry mirrors the transforms' strides without importing torch."""
    from stcm.models import transforms
    from stcm.runtime import header

    assert (header.DOWNSAMPLE, header.HYPER_DOWNSAMPLE, header.PAD_MULTIPLE) == (
        transforms.DOWNSAMPLE, transforms.HYPER_DOWNSAMPLE, transforms.PAD_MULTIPLE)
