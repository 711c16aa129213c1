"""The engine manifest: what an engine directory holds, pinned file by file by sha256, and
the signature of each stage (the contract between ``stcm export``, which writes engines, and
the runtime, which reads them; no torch in here).

    manifest.json
    {"format": "stcm-engine", "format_version": 2, "model_id": hex, "config": {...},
     "precision": "fp32", "opset": 17,
     "tables": {"file": "tables.safetensors", "sha256": hex},
     "stages": {"analysis": {"file": "analysis.onnx", "sha256": hex, "inputs": [...],
                             "outputs": [...], "exact": false}, ...},
     "tensorrt": {...}}                                   # only when engines were built

Reading verifies every hash before anything is loaded; a missing, extra-stage or modified
file is an ``EngineError`` naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stcm.atomic import atomic_write_bytes
from stcm.digest import sha256_file
from stcm.errors import ConfigError, EngineError
from stcm.config import ModelConfig
from stcm.contexts import context_variant

FORMAT = "stcm-engine"
FORMAT_VERSION = 4  # 2: pinned level gains, exact entropy stages; 3: the product rule between
# levels (models/gain.py), with container format 2; 4: the temporal context in its own stage
# (temporal_k), side_k reads its features
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a stage: name, dtype and shape (ints, or names of dynamic axes)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"))


@dataclass(frozen=True)
class StageSignature:
    """The contract of one stage: its inputs and outputs, in call order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], **self.extra}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "StageSignature":
        extra = {k: v for k, v in d.items() if k not in ("inputs", "outputs")}
        return cls(name, tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in d["outputs"]), extra)


ENTROPY_STAGE_PREFIXES = ("hyper_synthesis", "temporal_", "side_", "step_", "recompute_")
# Optional: g_s quantized to int8 (``stcm export --int8-synthesis``), which the runtime runs
# instead of ``synthesis`` for 8-bit images only (docs/performance.md).
INT8_SYNTHESIS = "synthesis_int8"


def is_entropy_stage(name: str) -> bool:
    """Stages whose outputs decide the coded distributions (exact in exact models)."""
    return name.startswith(ENTROPY_STAGE_PREFIXES)


def required_stages(cfg: ModelConfig) -> set[str]:
    """The stages an engine of this config must contain."""
    names = {"analysis", "hyper_analysis", "hyper_synthesis", "synthesis"}
    for k in range(len(cfg.groups)):
        names |= {f"side_{k}", f"recompute_{k}"}
        if cfg.temporal:
            names.add(f"temporal_{k}")
        if context_variant(cfg.context).wavefront:
            names.add(f"step_{k}")
    return names


def write_manifest(folder: Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest(folder: str | Path) -> dict:
    """Reads and verifies an engine's manifest: format, config, stages, every file's hash."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise EngineError(f"{folder} is not an stcm engine: no {MANIFEST_NAME} (make one with "
                          "`stcm export CHECKPOINT DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EngineError(f"{path} is not an stcm engine manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EngineError(f"{path} has engine format {manifest.get('format_version')!r}; this "
                          f"stcm reads {FORMAT_VERSION}: re-export the engine")
    try:
        cfg = ModelConfig.from_dict(manifest["config"])
        stages = manifest["stages"]
        files = [("tables", manifest["tables"])] + list(stages.items())
        files += list(manifest.get("tensorrt", {}).get("stages", {}).items())
        bytes.fromhex(manifest["model_id"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise EngineError(f"{path} is incomplete or malformed: {exc}") from exc
    missing = required_stages(cfg) - set(stages)
    if missing:
        raise EngineError(f"{folder} lacks stages {sorted(missing)}; re-export the engine")
    for name, entry in files:
        try:
            file = folder / entry["file"]
            expected = entry["sha256"]
        except (KeyError, TypeError) as exc:
            raise EngineError(f"{path}: entry {name!r} is malformed") from exc
        if Path(entry["file"]).name != entry["file"]:
            raise EngineError(f"{path}: entry {name!r} points outside the engine directory")
        if not file.is_file():
            raise EngineError(f"{folder} is incomplete: {entry['file']} ({name}) is missing")
        if sha256_file(file) != expected:
            raise EngineError(f"{file} does not match its sha256 in the manifest: the engine "
                              "was modified or damaged; re-export it")
    return manifest
