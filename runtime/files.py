"""File-level operations over ``Codec``: image files in, containers out, and back, with
georeferencing kept, atomic writes, and never a write over an existing file or the input."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from stcm.atomic import atomic_write_bytes
from stcm.errors import DataError, OutputExistsError
from stcm.runtime.fields import field_error
from stcm.runtime.codec import DEFAULT_QUALITY, Codec
from stcm.runtime.imageio import Raster, read_raster, same_file, write_raster


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
    keeping its georeferencing and band descriptions; writes atomically, never over the input.

    ``refine`` > 0: that many steps of encode-time latent refinement; ``temporal``: how the
    reference is used (both as in ``Codec.compress``).
    """
    source, target = Path(source), Path(target)
    _check_target(source, target, force)
    raster = read_raster(source)
    ref = _read_bytes(reference) if reference is not None else None
    start = time.perf_counter()
    data = codec.compress(raster.pixels, quality, georef=raster.georef,
                          extra=_descriptions(raster), reference=ref, refine=refine,
                          temporal=temporal)
    seconds = time.perf_counter() - start
    atomic_write_bytes(target, data)
    return FileReport(source, target, raster.height * raster.width, raster.bands, len(data),
                      seconds)


def decompress_file(codec: Codec, source, target, *, reference=None,
                    force: bool = False) -> FileReport:
    """Decompresses a container to an image file (the format follows ``target``'s suffix;
    GeoTIFF keeps CRS, transform, nodata, dtype and band count)."""
    source, target = Path(source), Path(target)
    _check_target(source, target, force)
    data = _read_bytes(source)
    ref = _read_bytes(reference) if reference is not None else None
    start = time.perf_counter()
    image = codec.decompress_image(data, ref)
    seconds = time.perf_counter() - start
    raster = Raster(image.pixels, image.georef, _stored_descriptions(image.header))
    write_raster(target, raster, force=force, source=source)
    return FileReport(source, target, image.pixels.shape[1] * image.pixels.shape[2],
                      image.pixels.shape[0], len(data), seconds)


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def _descriptions(raster) -> dict:
    names = raster.band_descriptions
    return {"band_descriptions": list(names)} if names and any(names) else {}


def _stored_descriptions(header) -> tuple | None:
    """The band descriptions a container's extra holds (what ``_descriptions`` wrote): one
    string or null per band, or none at all.

    Raises:
        CorruptError: The field is there but is anything else.
    """
    names = header.extra.get("band_descriptions")
    if names is None:
        return None
    if (not isinstance(names, list) or len(names) != header.bands
            or not all(n is None or isinstance(n, str) for n in names)):
        raise field_error("extra.band_descriptions", f"must list one string (or null) per "
                          f"band ({header.bands}), got {names!r:.80}")
    return tuple(names) if any(names) else None


def _check_target(source: Path, target: Path, force: bool) -> None:
    if not source.is_file():
        raise DataError(f"input {source} does not exist or is not a file")
    if same_file(source, target):
        raise OutputExistsError(f"refusing to write the output over the input {source}")
    if target.exists() and not force:
        raise OutputExistsError(f"{target} exists; pass --force (force=True) to overwrite it")
