"""Checkpoints: weights in safetensors with the model config in the file's metadata.

One file rebuilds its model with no outside knowledge and no pickle:
metadata = {"format": "stcm-checkpoint", "format_version": "1", "config": <ModelConfig JSON>,
"meta": <JSON of training facts: step, data, metrics>}.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from stcm.atomic import atomic_path
from stcm.errors import CheckpointError, ConfigError
from stcm.models.codec import STCM, CodingState
from stcm.config import ModelConfig

FORMAT = "stcm-checkpoint"
FORMAT_VERSION = "1"
CHECKPOINT_NAME = "checkpoint.safetensors"


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a training output folder holding ``checkpoint.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def save_checkpoint(model: STCM, path: str | os.PathLike, meta: dict | None = None,
                    half: bool = False) -> Path:
    """Writes the model's weights, config and pinned coding tables to ``path`` atomically.

    ``half`` stores the weights in fp16; the coding tables are then computed from the
    fp16-rounded weights (and always stored at full precision). A frozen model keeps the
    tables it has.
    """
    dtype = torch.float16 if half else torch.float32
    # Integer buffers (the latent shift tables) keep their type: they are exact tables.
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    if model.frozen:
        coding = model.coding
    elif half:
        rounded = STCM(model.cfg)
        rounded.load_state_dict({k: v.float() for k, v in tensors.items()})
        coding = rounded.coding_state()
    else:
        coding = model.coding_state()
    tensors.update(coding.to_tensors())
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_json(),
        "meta": json.dumps(meta or {}, sort_keys=True),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """(config, meta) of a checkpoint without loading its weights."""
    path = resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an stcm checkpoint (format={metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version "
                              f"{metadata.get('format_version')!r}; this stcm reads {FORMAT_VERSION}")
    try:
        cfg = ModelConfig.from_json(metadata["config"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, ConfigError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has an unreadable config: {exc}") from exc
    return cfg, meta


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> tuple[STCM, dict]:
    """Rebuilds the model stored in a checkpoint; returns (model in eval mode, meta)."""
    path = resolve(path)
    cfg, meta = read_metadata(path)
    model = STCM(cfg)
    try:
        tensors = load_file(str(path), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    coding = {k: tensors.pop(k) for k in list(tensors) if k.startswith(CodingState.PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match its config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(value.shape)}, the "
                                  f"config expects {tuple(expected[name].shape)}")
        tensors[name] = value.to(expected[name].dtype)
    model.load_state_dict(tensors)
    if coding:  # pinned tables; older checkpoints have none and freeze on this machine
        try:
            model.freeze(CodingState.from_tensors(coding))
        except KeyError as exc:
            raise CheckpointError(f"{path} has incomplete coding tables (no {exc})") from None
    return model.eval(), meta


def parameter_counts(model: STCM) -> dict[str, int]:
    """Parameters per part of the model, and the total."""
    parts = {
        "g_a": model.g_a, "g_s": model.g_s, "h_a": model.h_a, "h_s": model.h_s,
        "entropy_bottleneck": model.entropy_bottleneck, "gain": model.gain,
        "context": model.entropy_parameters,
    }
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def model_fingerprint(model: STCM) -> bytes:
    """sha256 over the config, every tensor (name, dtype, shape, bytes) and the coding tables
    of a frozen model: the model id that containers record, so a stream is never decoded
    with other weights or tables."""
    import hashlib

    digest = hashlib.sha256(model.cfg.to_json().encode())
    tensors = dict(model.state_dict())
    if model.frozen:
        tensors.update(model.coding.to_tensors())
    for name, value in sorted(tensors.items()):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.digest()


# Fields that only shape the main transform (g_a, g_s): a checkpoint that differs from the
# model only in these still lends it the hyperprior, gain and context weights.
_TRANSFORM_FIELDS = {"backbone", "high_width", "attention"}
_TRANSFORM_MODULES = ("g_a.", "g_s.")


def init_weights(model: STCM, path: str | os.PathLike) -> list[str]:
    """Starts ``model`` from the weights of another checkpoint of the same architecture, e.g.
    a float model fine-tuned into an exact one (quantization-aware training): every weight
    must match; only the exact path's quantizer statistics may be missing (they calibrate
    on the first training batches).

    A checkpoint whose config differs only in the main transform (e.g. ``small`` for
    ``hl-small``) lends every weight except g_a and g_s, which keep their fresh
    initialisation. Returns the names of the modules that start fresh (empty when all load).
    """
    source, _ = load_checkpoint(path)
    mine, theirs = source.cfg.to_dict(), model.cfg.to_dict()
    ignore = {"name", "exact", "exact_act_bits", "exact_weight_bits", "exact_mean_bits"}
    differ = sorted(k for k in mine if k not in ignore and mine[k] != theirs[k])
    if set(differ) - _TRANSFORM_FIELDS:
        raise ConfigError(f"cannot start from {path}: its architecture differs in {differ}")
    skip = _TRANSFORM_MODULES if differ else ()  # str.startswith(()) is always False
    state = {k: v for k, v in source.state_dict().items() if k in model.state_dict()
             and not k.startswith(skip)}
    missing, _ = model.load_state_dict(state, strict=False)
    weights = [k for k in missing if not _is_quantizer_state(k) and not k.startswith(skip)]
    if weights:
        raise CheckpointError(f"{path} lacks weights {weights[:5]}")
    return [m.rstrip(".") for m in skip]


def _is_quantizer_state(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_max", "exponent", "observed")
