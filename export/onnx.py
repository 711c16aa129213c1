"""Export of a trained model to an engine directory: one ONNX graph per stage, the coding
tables, and a manifest that pins every file by sha256.

    stcm export CHECKPOINT OUTDIR [--tensorrt] [--fp16]

Graphs use a fixed opset, dynamic batch (tiles) and spatial axes where the stage allows,
masks baked into the weights, and only operators that TensorRT supports (checked in tests).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from stcm.errors import ConfigError, OutputExistsError
from stcm.export.stages import build_stages
from stcm.manifest import (FORMAT, FORMAT_VERSION, INT8_SYNTHESIS, MANIFEST_NAME,
                           StageSignature, is_entropy_stage, sha256_file, write_manifest)
from stcm.models.checkpoint import load_checkpoint, model_fingerprint
from stcm.models.codec import STCM
from stcm.tables import TABLES_NAME, CodingTables

OPSET = 17
# Example sizes for tracing; every named axis is exported as dynamic.
_EXAMPLE = {"batch": 1, "height": 64, "width": 64, "lat_h": 4, "lat_w": 4, "z_h": 1, "z_w": 1,
            "tile_h": 4, "tile_w": 5, "rows": 4}


def _example_inputs(signature: StageSignature, sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for spec in signature.inputs:
        shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
        tensors.append(torch.rand(shape, generator=gen))
    return tuple(tensors)


def _dynamic_axes(signature: StageSignature) -> dict[str, dict[int, str]]:
    axes = {}
    for spec in signature.inputs + signature.outputs:
        named = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        if named:
            axes[spec.name] = named
    return axes


def export_stage(module: torch.nn.Module, signature: StageSignature, path: Path,
                 sizes: dict[str, int] | None = None) -> None:
    """Traces one stage to ONNX and checks the graph; ``sizes`` gives example sizes of the
    dynamic axes (defaults for the stage axes of ``build_stages``)."""
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the torch.export one,
        # which needs onnxscript; this one covers our convolution graphs fully.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*Converting a tensor to a Python.*")
        # Exact layers' power-of-two scales are built from their (constant) exponents.
        warnings.filterwarnings("ignore", message=".*torch.tensor results are registered.*")
        # The step's row-shifted slices have dynamic ends; nothing to fold there.
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        torch.onnx.export(
            module.eval(), _example_inputs(signature, {**_EXAMPLE, **(sizes or {})}), str(path),
            dynamo=False,
            input_names=[s.name for s in signature.inputs],
            output_names=[s.name for s in signature.outputs],
            dynamic_axes=_dynamic_axes(signature), opset_version=OPSET,
            do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def export_engine(model: STCM | str | os.PathLike, outdir: str | os.PathLike, *,
                  tensorrt: bool = False, fp16: bool = False, force: bool = False,
                  int8_synthesis: bool = False, progress: bool | None = None) -> Path:
    """Writes an engine directory for ``model`` (a checkpoint path or an ``STCM``).

    The directory is built in a temporary sibling and renamed into place, so a failed export
    never leaves a half-written engine. ``tensorrt`` also builds serialized TensorRT engines
    (needs the ``tensorrt`` package and a GPU); ``fp16`` selects FP16 TensorRT precision for
    the transform stages (the entropy stages stay FP32). ``int8_synthesis`` also writes g_s
    quantized to int8 for onnxruntime on the CPU (``export.int8``), which the runtime runs
    for 8-bit images: their decoded pixels change slightly, latents and streams do not; not
    with ``tensorrt``.
    """
    outdir = Path(outdir)
    if int8_synthesis and tensorrt:
        raise ConfigError("the int8 synthesis is for onnxruntime on the CPU; TensorRT builds "
                          "its own precisions (--fp16)")
    if outdir.exists() and not force:
        raise OutputExistsError(f"{outdir} exists; pass --force to replace it")
    if not isinstance(model, STCM):
        model, _ = load_checkpoint(model)
    model = model.eval()
    if not model.frozen:
        model.freeze()
    model_id = model_fingerprint(model)
    stages = build_stages(model)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        entries = {}
        for name, (module, signature) in tqdm(stages.items(), desc="export", unit="stage",
                                              disable=progress is False):
            path = tmp / f"{name}.onnx"
            with torch.no_grad():
                export_stage(module, signature, path)
            entries[name] = {"file": path.name, "sha256": sha256_file(path),
                             "exact": model.cfg.exact and is_entropy_stage(name),
                             **signature.to_dict()}
        if int8_synthesis:
            from stcm.export.int8 import calibration_latents, quantize_synthesis

            path = tmp / f"{INT8_SYNTHESIS}.onnx"
            quantize_synthesis(model, stages["synthesis"][1], path, calibration_latents(model))
            entries[INT8_SYNTHESIS] = {**entries["synthesis"], "file": path.name,
                                       "sha256": sha256_file(path), "precision": "int8"}
        tables = CodingTables.from_model(model, model_id).save(tmp)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model_id": model_id.hex(),
            "config": model.cfg.to_dict(), "precision": "fp32", "opset": OPSET,
            "tables": {"file": TABLES_NAME, "sha256": sha256_file(tables)},
            "stages": entries,
        }
        if tensorrt:
            from stcm.export.tensorrt import build_engines

            manifest["tensorrt"] = build_engines(tmp, manifest, fp16=fp16)
        write_manifest(tmp, manifest)
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir / MANIFEST_NAME
