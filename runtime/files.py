"""File-level operations over ``Codec``: image files in, containers out, and back, with
georeferencing, metadata and nodata kept, atomic writes, and never a write over an existing
file or the input."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stcm.atomic import atomic_write_bytes
from stcm.errors import DataError, OutputExistsError
from stcm.runtime.codec import DEFAULT_QUALITY, Codec, check_window
from stcm.runtime.container import peek_header
from stcm.runtime.georeference import Georeference
from stcm.runtime.imageio import GEOTIFF_SUFFIXES, Raster, same_file, write_raster
from stcm.runtime.rasterblocks import GeoTiffSink, gdal_env, open_source
from stcm.runtime.metadata import (EXTRA_DESCRIPTIONS, EXTRA_METADATA, RasterMetadata,
                                   check_descriptions)


@dataclass(frozen=True)
class FileReport:
    """What a file operation did, for the CLI and for logs."""

    source: Path
    target: Path
    pixels: int
    bands: int
    compressed_bytes: int
    seconds: float

    @property
    def bits_per_pixel(self) -> float:
        return 8 * self.compressed_bytes / self.pixels

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / (self.pixels / 1e6)


def compress_file(codec: Codec, source, target, quality: float = DEFAULT_QUALITY, *,
                  reference=None, force: bool = False, refine: int = 0,
                  temporal: str = "auto") -> FileReport:
    """Compresses an image file (PNG, JPEG, TIFF, GeoTIFF, JPEG 2000) to an stcm container,
    keeping its georeferencing, band descriptions and metadata, and its nodata samples or mask
    band exactly (a lossless mask); writes atomically, never over the input. The image is
    read by windows (``Codec.compress_source``), never whole: the same bytes as
    ``Codec.compress`` of the whole array.

    ``refine`` > 0: that many steps of encode-time latent refinement; ``temporal``: how the
    reference is used (both as in ``Codec.compress``).
    """
    source, target = Path(source), Path(target)
    _check_target(source, target, force, reference)
    ref = _read_bytes(reference) if reference is not None else None
    with open_source(source) as (blocks, georef, names, metadata):
        start = time.perf_counter()
        data = codec.compress_source(blocks, quality, georef=georef,
                                     extra=_extra(names, metadata), reference=ref,
                                     refine=refine, temporal=temporal,
                                     label=f"encode {source.name}")
        seconds = time.perf_counter() - start
        height, width, bands = blocks.height, blocks.width, blocks.bands
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:  # disk full, a folder removed meanwhile...
        raise DataError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return FileReport(source, target, height * width, bands, len(data), seconds)


def decompress_file(codec: Codec, source, target, *, reference=None,
                    force: bool = False, cog: bool = False, window=None) -> FileReport:
    """Decompresses a container to an image file (the format follows ``target``'s suffix;
    GeoTIFF keeps the georeferencing, nodata, mask band, dtype, band count and metadata).
    ``cog``: write a Cloud-Optimized GeoTIFF with overviews (``target`` must be .tif).
    ``window`` (col_off, row_off, width, height): decode and write only that part
    (``Codec.decompress``), georeferenced as that part (rasterio's ``windows.transform``).
    A GeoTIFF is written block by block as g_s makes them (``Codec.decompress_into``),
    never whole in memory; PNG and JPEG 2000 are decoded whole first."""
    source, target = Path(source), Path(target)
    if cog and target.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise DataError(f"{target}: a Cloud-Optimized GeoTIFF (--cog) is a GeoTIFF; give the "
                        "output a .tif or .tiff suffix")
    _check_target(source, target, force, reference)
    data = _read_bytes(source)
    ref = _read_bytes(reference) if reference is not None else None
    if target.suffix.lower() in GEOTIFF_SUFFIXES:
        return _decompress_geotiff(codec, source, target, data, ref, force, cog, window)
    start = time.perf_counter()
    image = codec.decompress_image(data, ref, window=window)
    seconds = time.perf_counter() - start
    raster = _raster(image.header, image.pixels, image.missing)
    if window is not None and raster.georef is not None:
        raster = dataclasses.replace(raster, georef=_windowed(raster.georef, *image.window[:2]))
    write_raster(target, raster, force=force, source=source, cog=cog)
    return FileReport(source, target, image.pixels.shape[1] * image.pixels.shape[2],
                      image.pixels.shape[0], len(data), seconds)


def _decompress_geotiff(codec: Codec, source: Path, target: Path, data: bytes, ref, force,
                        cog, window) -> FileReport:
    """``decompress_file`` to a GeoTIFF, g_s's blocks written into its windows."""
    header = peek_header(data, codec.max_pixels)
    col, row, width, height = (check_window(window, header.height, header.width)
                               if window is not None else (0, 0, header.width, header.height))
    # The file's layout: its shape and dtype, not its pixels (zero bytes of memory).
    layout = np.broadcast_to(np.zeros((), np.dtype(header.dtype)), (header.bands, height, width))
    raster = _raster(header, layout, None, blocks=True)
    if window is not None and raster.georef is not None:
        raster = dataclasses.replace(raster, georef=_windowed(raster.georef, col, row))
    seconds = 0.0

    def blocks(ds) -> None:
        nonlocal seconds
        start = time.perf_counter()
        codec.decompress_into(data, GeoTiffSink(ds, raster.metadata.dataset_mask), ref,
                              window=window, label=f"decode {source.name}")
        seconds = time.perf_counter() - start

    with gdal_env():
        write_raster(target, raster, force=force, source=source, cog=cog, blocks=blocks)
    return FileReport(source, target, height * width, header.bands, len(data), seconds)


def _windowed(georef: Georeference, col: int, row: int) -> Georeference:
    """``georef`` of the part of its image from pixel (row, col) on: the transform moved
    there, and the GCPs' and RPCs' pixel coordinates shifted with it."""
    from affine import Affine
    from rasterio.windows import Window, transform as window_transform

    moved = georef.transform
    if moved is not None:
        moved = tuple(window_transform(Window(col, row, 1, 1), Affine(*moved)))[:6]
    gcps = tuple(dataclasses.replace(g, row=g.row - row, col=g.col - col) for g in georef.gcps)
    rpcs = georef.rpcs
    if rpcs is not None:
        rpcs = {**rpcs, "line_off": rpcs["line_off"] - row, "samp_off": rpcs["samp_off"] - col}
    return dataclasses.replace(georef, transform=moved, gcps=gcps, rpcs=rpcs)


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def _extra(names, metadata: RasterMetadata) -> dict:
    """The header's extra for a raster's band names and metadata, when it has any."""
    extra = {}
    if names and any(names):
        extra[EXTRA_DESCRIPTIONS] = list(names)
    metadata = metadata.to_json()
    if metadata:
        extra[EXTRA_METADATA] = metadata
    return extra


def _raster(header, pixels: np.ndarray, missing: np.ndarray | None,
            blocks: bool = False) -> Raster:
    """The raster a decoded image (``header``, its pixels and missing samples) is written as
    (``_extra`` inverted; the header validated both fields when it was read); ``blocks``:
    the mask band is written with the pixels (``GeoTiffSink``), not from the raster."""
    extra, bands = header.extra, header.bands
    names = extra.get(EXTRA_DESCRIPTIONS)
    metadata = (RasterMetadata.from_json(extra[EXTRA_METADATA], bands)
                if EXTRA_METADATA in extra else RasterMetadata())
    if metadata.dataset_mask and not blocks:  # the mask band, one plane for all bands
        missing = (missing.all(axis=0) if missing is not None
                   else np.zeros(pixels.shape[1:], bool))
    else:
        missing = None
    return Raster(pixels, header.georef,
                  check_descriptions(names, bands) if names is not None else None,
                  metadata, missing)


def _check_target(source: Path, target: Path, force: bool, reference=None) -> None:
    """Before any work: the inputs exist, the output is none of them (through links, hard
    links included) and can be written where it is asked for."""
    if not source.is_file():
        raise DataError(f"input {source} does not exist or is not a file")
    inputs = [("input", source)]
    if reference is not None:
        reference = Path(reference)
        if not reference.is_file():
            raise DataError(f"reference {reference} does not exist or is not a file")
        inputs.append(("reference", reference))
    for role, path in inputs:
        if same_file(path, target):
            raise OutputExistsError(f"refusing to write the output over the {role} {path}")
    if target.is_dir():
        raise OutputExistsError(f"the output {target} is a folder; name a file in it")
    if target.exists() and not force:
        raise OutputExistsError(f"{target} exists; pass --force (force=True) to overwrite it")
    parent = target.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DataError(f"cannot write {target}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {target}: no permission to write in {existing}")
