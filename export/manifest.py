"""The engine manifest: what an engine directory holds, pinned file by file by sha256.

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
from pathlib import Path

from stcm.atomic import atomic_write_bytes
from stcm.digest import sha256_file
from stcm.errors import ConfigError, EngineError
from stcm.models.config import ModelConfig

FORMAT = "stcm-engine"
FORMAT_VERSION = 3  # 2: pinned level gains, exact entropy stages; 3: the product rule between
# levels (models/gain.py), with container format 2
MANIFEST_NAME = "manifest.json"


def required_stages(cfg: ModelConfig) -> set[str]:
    """The stages an engine of this config must contain."""
    names = {"analysis", "hyper_analysis", "hyper_synthesis", "synthesis"}
    for k in range(len(cfg.groups)):
        names |= {f"side_{k}", f"recompute_{k}"}
        if cfg.context == "diag":
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
