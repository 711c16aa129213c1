"""What ``stcm info`` reports about a file: an .stcm container (its header and streams), a
checkpoint (its config, parameters and training record) or an engine directory (its stages
and their precisions), as a JSON-able dict, and that dict as text.

Containers are read with the runtime alone; a checkpoint's description loads it, so torch is
imported then (and only then).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from stcm.config import ModelConfig
from stcm.contexts import context_variant
from stcm.manifest import INT8_SYNTHESIS, MANIFEST_NAME, read_manifest
from stcm.runtime.container import MAGIC, read_container

_KINDS = {0: "z", 1: "y"}


def describe(path: str | os.PathLike) -> dict:
    """The description of an .stcm container, a checkpoint file, a training folder or an
    engine directory.

    Raises:
        NotStcmFileError, ContainerError: a damaged container.
        EngineError: an engine directory whose manifest or files do not check out.
        CheckpointError: none of these.
    """
    path = Path(path)
    if (path / MANIFEST_NAME).is_file():
        return describe_engine(path)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                return describe_container(path.read_bytes(), path)
    return describe_checkpoint(path)


def describe_container(data: bytes, path: str | os.PathLike | None = None) -> dict:
    """A container's header fields and stream table (every field validated on reading)."""
    container = read_container(data)
    h = container.header
    return {
        "kind": "container", "path": None if path is None else str(path),
        "format": f"{container.data[4]}.{container.data[5]}",
        "bytes": len(container.data), "bits_per_pixel": container.bits_per_pixel,
        "model_id": h.model_id.hex(), "header_bytes": container.header_bytes,
        "numerics": h.numerics, "height": h.height, "width": h.width, "bands": h.bands,
        "band_groups": h.band_groups, "dtype": h.dtype, "quality": h.quality,
        "latent": list(h.latent_shape), "tile_size": h.tile_size, "tiles": h.tiles,
        "georeferenced": h.georef is not None,
        "crs": h.georef.crs if h.georef is not None else None,
        "transform": list(h.georef.transform) if h.georef and h.georef.transform else None,
        "nodata": _json_number(h.georef.nodata) if h.georef is not None else None,
        "gcps": len(h.georef.gcps) if h.georef is not None else 0,
        "rpcs": h.georef is not None and h.georef.rpcs is not None,
        "mask": None if h.mask is None else "per band" if h.mask.per_band else "shared",
        "reference_id": h.reference_id.hex() if h.reference_id else None,
        "reference_grid": None if h.reference_grid is None else {
            "origin": list(h.reference_grid.origin),
            "mapping": list(h.reference_grid.mapping), "shifted": h.reference_grid.shifted},
        "intra_tiles": list(h.intra_tiles),
        "streams": [{"band_group": e.band_group, "kind": _KINDS.get(e.kind, e.kind),
                     "tile": e.tile, "offset": e.offset, "bytes": e.length,
                     "crc32": f"{e.crc32:08x}",
                     "symbols_crc32": None if container.checksums is None
                     else f"{container.checksums[i]:08x}"}
                    for i, e in enumerate(container.entries)],
    }


def _json_number(value):
    """A float for JSON: NaN and infinities, which strict JSON lacks, as their names."""
    if value is None or math.isfinite(value):
        return value
    return str(value)  # 'nan', 'inf', '-inf'


def describe_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's config, parameter counts per part and training record."""
    from stcm.models.checkpoint import load_checkpoint, parameter_counts, resolve

    model, meta = load_checkpoint(path)
    return {"kind": "checkpoint", "path": str(resolve(path)), "config": model.cfg.to_dict(),
            "parameters": parameter_counts(model), "step": meta.get("step"),
            "validation": meta.get("validation", {}),
            "temporal_keep": (meta.get("train") or {}).get("temporal_keep")}


def _temporal_text(cfg: ModelConfig) -> str:
    if not cfg.temporal:
        return "temporal=False"
    return (f"temporal=True ({cfg.temporal_width} units"
            + (" + prediction" if cfg.temporal_prediction else "")
            + (" + latent shift)" if cfg.latent_shift else ")"))


def describe_engine(path: str | os.PathLike) -> dict:
    """An engine's model, format and stages (file, precision, exact), its manifest verified."""
    manifest = read_manifest(path)
    precision = manifest.get("precision", "fp32")
    return {"kind": "engine", "path": str(path), "model_id": manifest["model_id"],
            "config": manifest["config"], "format_version": manifest["format_version"],
            "opset": manifest.get("opset"),
            "stages": {name: {"file": e["file"], "precision": e.get("precision", precision),
                              "exact": bool(e.get("exact"))}
                       for name, e in sorted(manifest["stages"].items())},
            "tensorrt": sorted(manifest.get("tensorrt", {}).get("stages", {}))}


def format_description(info: dict) -> str:
    """``describe``'s dict as the text ``stcm info`` prints."""
    if info["kind"] == "container":
        return _container_text(info)
    if info["kind"] == "engine":
        return _engine_text(info)
    return _checkpoint_text(info)


def _engine_text(info: dict) -> str:
    cfg = ModelConfig.from_dict(info["config"])
    stages = info["stages"]
    exact = [n for n, s in stages.items() if s["exact"]]
    lines = [f"stcm engine: {info['path']} (engine format {info['format_version']}, ONNX opset "
             f"{info['opset']}, model id {info['model_id'][:16]})",
             f"  model     {cfg.name}: N={cfg.N} M={cfg.M} groups={list(cfg.groups)}, "
             f"context={cfg.context}, {_temporal_text(cfg)}",
             f"  stages    {len(stages)} ONNX graphs, {len(exact)} of them exact (integer)"]
    lines += [f"  {name:<17} {s['file']:<24} {s['precision']}"
              + (", exact" if s["exact"] else "")
              + (" (run for 8-bit images)" if name == INT8_SYNTHESIS else "")
              for name, s in stages.items()]
    lines.append("  tensorrt  " + (f"{len(info['tensorrt'])} plans" if info["tensorrt"]
                                   else "no plans"))
    return "\n".join(lines)


def _container_text(info: dict) -> str:
    lines = [f"stcm container: {info['path']} (format {info['format']}, {info['bytes']:,} bytes, "
             f"{info['bits_per_pixel']:.4f} bpp; header and stream table "
             f"{info['header_bytes']} bytes)",
             f"  image     {info['height']}x{info['width']}, {info['bands']} bands, "
             f"{info['dtype']}, quality {info['quality']:g}",
             f"  model     id {info['model_id']}, {info['numerics']} numerics",
             f"  latent    {info['latent'][0]}x{info['latent'][1]}, tiles of "
             f"{info['tile_size']}, {info['band_groups']} band group(s)"]
    if info["georeferenced"]:
        crs = info["crs"] or "no CRS"
        crs = crs if len(crs) <= 60 else crs[:57] + "..."
        transform = tuple(info["transform"]) if info["transform"] else None
        lines.append(f"  georef    {crs} transform={transform} nodata={info['nodata']}"
                     f" gcps={info['gcps']} rpcs={'yes' if info['rpcs'] else 'no'}")
    if info["mask"]:
        planes = "per band" if info["mask"] == "per band" else "for all bands"
        lines.append(f"  mask      missing samples, one plane {planes}")
    if info["reference_id"]:
        intra = len(info["intra_tiles"])
        lines.append(f"  reference {info['reference_id'][:16]} (temporal context; "
                     f"{info['band_groups'] * info['tiles'] - intra} tiles use it, "
                     f"{intra} coded intra)")
        grid = info.get("reference_grid")
        if grid:
            a, b, c, d, e, f = grid["mapping"]
            how = ("latent moved by the model's shift tables" if grid["shifted"] else
                   f"canvas origin {tuple(grid['origin'])}" if any(grid["origin"]) else
                   "latent moved by whole positions" if (a, b, d, e) == (1, 0, 0, 1) else
                   "latent resampled bilinearly")
            lines.append(f"  grid      reference pixel = ({a:g}*col + {b:g}*row + {c:g}, "
                         f"{d:g}*col + {e:g}*row + {f:g}); {how}")
    lines += [f"  stream    group {s['band_group']} {s['kind']} tile {s['tile']:<4} "
              f"{s['bytes']:>9,} bytes @ {s['offset']:<9} crc {s['crc32']}"
              + (f" symbols {s['symbols_crc32']}" if s["symbols_crc32"] else "")
              for s in info["streams"]]
    return "\n".join(lines)


def _checkpoint_text(info: dict) -> str:
    cfg = ModelConfig.from_dict(info["config"])
    layers = f" x{cfg.context_layers}" if context_variant(cfg.context).stacked else ""
    residual = (" with residual blocks" if cfg.context_residual and cfg.context_layers > 1
                else "")
    entropy = (f"exact integers ({cfg.exact_act_bits}-bit activations, {cfg.exact_weight_bits}"
               "-bit weights): streams decode on any backend" if cfg.exact else
               "float: streams decode only on the backend that wrote them")
    params = info["parameters"]
    lines = [f"stcm checkpoint: {info['path']}",
             f"  model     {cfg.name}: N={cfg.N} M={cfg.M} groups={list(cfg.groups)} "
             f"attention={cfg.attention}",
             f"  context   spatial={cfg.context}{layers}{residual}, {_temporal_text(cfg)}",
             f"  entropy   {entropy}",
             f"  quality   {cfg.num_qualities} trained levels, lambda {cfg.lambdas[0]:g}.."
             f"{cfg.lambdas[-1]:g}, continuous quality in [0, 1]",
             f"  params    {params['total']:,} "
             + " ".join(f"{k}={v:,}" for k, v in params.items() if k != "total"),
             f"  trained   {info['step'] or 0} steps"
             + (" (its last run retrained the temporal branch alone)"
                if info.get("temporal_keep") is not None else "")]
    for q, v in info["validation"].items():
        if "bpp_alone" in v:  # that run validates revisits of the val crops
            lines.append(f"  val {q:<5} {v['bpp']:.4f} bpp with the reference, "
                         f"{v['bpp_alone']:.4f} alone (revisits, estimated), {v['psnr']:.2f} dB")
        else:
            lines.append(f"  val {q:<5} {v['bpp']:.4f} bpp (estimated), {v['psnr']:.2f} dB")
    return "\n".join(lines)
