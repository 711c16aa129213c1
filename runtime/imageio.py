"""Reading and writing the images users compress, with their georeferencing preserved.

Every format goes through rasterio (GDAL). ``read_raster`` returns the pixels as (bands, H, W)
in their native dtype plus the georeferencing (CRS, affine transform, nodata value, GCPs and
RPCs), band descriptions, the rest of what rasterio exposes (``RasterMetadata``: tags,
AREA_OR_POINT among them, colour interpretation, units, scales/offsets, overview factors) and
a per-dataset mask band; ``write_raster`` writes them back so that a decoded image is a
drop-in replacement for its original. Output formats, chosen by the output suffix:

- ``.tif``/``.tiff``: GeoTIFF, lossless deflate, everything kept, overviews rebuilt (average
  resampling); with ``cog=True`` a Cloud-Optimized GeoTIFF (GDAL's COG driver) with
  overviews. The format for anything beyond 8/16-bit images of 1-4 bands.
- ``.png``: uint8/uint16, 1-4 bands (gray, gray+alpha, RGB, RGBA). CRS, transform and band
  descriptions cannot be stored (a warning says so); nodata only for 1 or 3 bands.
- ``.jp2``: lossless JPEG 2000 (reversible 5/3 wavelet), uint8/uint16/int16 only. CRS and
  transform are kept; nodata and band descriptions are not (a warning says so).

JPEG is read but never written: re-encoding decoded pixels lossily is not what users expect.

Pixel types: uint8, uint16, int16, uint32, int32, float32 and float64 are accepted (float64
is read and written as is, never narrowed); anything else (int8, 64-bit integers, complex)
is a ``DataError``. Tags of other domains than the default one are not kept.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import Affine

from stcm.atomic import atomic_path
from stcm.rasters import IMAGE_SUFFIXES, open_raster
from stcm.errors import DataError, OutputExistsError, StcmError

from stcm.runtime.georeference import ControlPoint, Georeference
from stcm.runtime.metadata import RasterMetadata


#: Pixel dtypes read and written; GeoTIFF holds them all.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in
                         ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"))
#: Suffixes read_raster accepts.
READ_SUFFIXES = IMAGE_SUFFIXES
#: Suffixes write_raster accepts, mapped to the GDAL driver.
WRITE_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".png": "PNG", ".jp2": "JP2OpenJPEG"}
PNG_DTYPES = (np.dtype("uint8"), np.dtype("uint16"))
# int32/uint32 JP2 files are written by GDAL but OpenJPEG cannot read them back.
JP2_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("int16"))
TILE = 256
# Written block by block, a GeoTIFF of more bands than one band group is band-interleaved.
BLOCK_PIXEL_INTERLEAVE_BANDS = 3
GEOTIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class Raster:
    """An image as stored in a file: pixels, georeferencing, band names and metadata.

    Attributes:
        pixels: (bands, H, W) array in the file's native dtype.
        georef: CRS, transform, nodata, GCPs and RPCs, or None when the file has none.
        band_descriptions: One name (or None) per band, or None when no band is named.
        metadata: Tags, colour interpretation, units, scales/offsets, overview factors.
        missing: (H, W) bool, True where the file's per-dataset mask band marks a pixel
            invalid; None without such a band (a nodata value marks missing samples itself).
    """

    pixels: np.ndarray
    georef: Georeference | None = None
    band_descriptions: tuple[str | None, ...] | None = None
    metadata: RasterMetadata = field(default_factory=RasterMetadata)
    missing: np.ndarray | None = None

    def __post_init__(self):
        _check_shape(self)

    @property
    def bands(self) -> int:
        return self.pixels.shape[0]

    @property
    def height(self) -> int:
        return self.pixels.shape[1]

    @property
    def width(self) -> int:
        return self.pixels.shape[2]


def _check_shape(raster: Raster) -> None:
    pixels = raster.pixels
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or 0 in pixels.shape:
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise DataError(f"raster pixels must be a non-empty (bands, H, W) array, got {shape}")
    names = raster.band_descriptions
    if names is not None and len(names) != pixels.shape[0]:
        raise DataError(f"{len(names)} band descriptions for {pixels.shape[0]} bands")
    # Validates the per-band fields' lengths.
    RasterMetadata(**{**vars(raster.metadata), "bands": pixels.shape[0]})
    missing = raster.missing
    if missing is not None and (not isinstance(missing, np.ndarray) or missing.dtype != bool
                                or missing.shape != pixels.shape[1:]):
        raise DataError(f"raster missing must be a bool array of shape {pixels.shape[1:]}, "
                        f"got {getattr(missing, 'dtype', type(missing).__name__)} "
                        f"{getattr(missing, 'shape', '')}")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Tells whether two paths name the same file (through links, ``..`` and hard links).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> same_file(folder / "a.tif", folder / "sub" / ".." / "a.tif")
        True
        >>> same_file(folder / "a.tif", folder / "b.tif")
        False
    """
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


_open = open_raster


def _expand_palette(ds) -> np.ndarray:
    """Returns a palette image as RGB, or RGBA when some palette entry is transparent."""
    colormap = ds.colormap(1)
    lut = np.zeros((max(colormap) + 1, 4), np.uint8)
    for value, rgba in colormap.items():
        lut[value] = rgba
    # Index values beyond the table get its last entry rather than failing on a sloppy file.
    rgba = np.moveaxis(np.take(lut, ds.read(1), axis=0, mode="clip"), -1, 0)
    return rgba if (lut[:, 3] < 255).any() else rgba[:3]


def _read_georef(ds, palette: bool) -> Georeference | None:
    transform = None if ds.transform.is_identity else tuple(float(v) for v in ds.transform[:6])
    crs = _crs_text(ds.crs) if ds.crs else None
    # A palette nodata is an index, meaningless once expanded (transparency is in alpha).
    nodata = None if palette or ds.nodata is None else float(ds.nodata)
    points, gcp_crs = ds.gcps
    gcps = tuple(ControlPoint(p.row, p.col, p.x, p.y, p.z or 0.0, p.id or "", p.info or "")
                 for p in points)
    rpcs = ds.rpcs.to_dict() if ds.rpcs else None
    if crs is None and transform is None and nodata is None and not gcps and rpcs is None:
        return None
    return Georeference(crs=crs, transform=transform, nodata=nodata, gcps=gcps,
                        gcp_crs=_crs_text(gcp_crs) if gcps and gcp_crs else None, rpcs=rpcs)


def _read_metadata(ds) -> RasterMetadata:
    """What rasterio says about the bands, each field None where it says nothing."""
    bands = range(1, ds.count + 1)
    band_tags = tuple(ds.tags(b) for b in bands)
    colorinterp = tuple(c.name for c in ds.colorinterp)
    plain = ("gray",) + ("undefined",) * (ds.count - 1)  # GDAL's default: not worth storing
    return RasterMetadata(
        tags=ds.tags(), band_tags=band_tags if any(band_tags) else None,
        colorinterp=None if colorinterp == plain else colorinterp,
        units=tuple(ds.units) if any(ds.units) else None,
        scales=tuple(ds.scales) if any(v != 1.0 for v in ds.scales) else None,
        offsets=tuple(ds.offsets) if any(v != 0.0 for v in ds.offsets) else None,
        overviews=tuple(ds.overviews(1)), dataset_mask=_has_mask_band(ds), bands=ds.count)


def _has_mask_band(ds) -> bool:
    # An alpha band is image data, coded with the others; a nodata mask follows from nodata.
    return all(flags == [MaskFlags.per_dataset] for flags in ds.mask_flag_enums)


def _crs_text(crs: CRS) -> str:
    """"EPSG:<code>" when the CRS is exactly that code (1-5 bytes in a container), else WKT."""
    epsg = crs.to_epsg()
    if epsg is not None and CRS.from_epsg(epsg) == crs:
        return f"EPSG:{epsg}"
    return crs.to_wkt()


def read_raster(path: str | os.PathLike) -> Raster:
    """Reads an image file with its georeferencing.

    PNG/JPEG keep every band, alpha included, so that a PNG round trip is exact; palette
    images are expanded to RGB (RGBA if the palette has transparent entries). TIFF/GeoTIFF
    and JPEG 2000 keep every band. ``georef`` is None unless the file has a CRS, a
    non-identity transform or a nodata value.

    Args:
        path: A .tif/.tiff, .png, .jpg/.jpeg or .jp2 file.

    Returns:
        The pixels as (bands, H, W) in the file's dtype, its georef and band descriptions.

    Raises:
        DataError: The file is missing or unreadable, or its pixel type is unsupported.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "gray.png"
        >>> _ = write_raster(path, Raster(np.arange(12, dtype=np.uint8).reshape(1, 3, 4)))
        >>> raster = read_raster(path)
        >>> raster.pixels.shape, raster.pixels.dtype, raster.georef
        ((1, 3, 4), dtype('uint8'), None)
    """
    with open_image(path) as (ds, dtype):
        if dtype is None:
            pixels = _expand_palette(ds)
        else:
            pixels = ds.read(out_dtype=dtype)
        masked, georef, names, metadata = describe(ds, pixels.shape[0])
        return Raster(pixels=pixels, georef=georef, band_descriptions=names, metadata=metadata,
                      missing=ds.dataset_mask() == 0 if masked else None)


@contextlib.contextmanager
def open_image(path: str | os.PathLike):
    """Opens an image file for reading: yields the dataset and the dtype its bands are read
    as, None for a palette image (``_expand_palette`` reads it). DataError for a missing or
    unreadable file, one without bands or of an unsupported pixel type."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cannot read image {path}: "
                        + ("it is a folder" if path.is_dir() else "no such file"))
    with _open(path) as ds:
        if ds.count == 0:
            raise DataError(f"cannot read image {path}: it has no raster bands "
                            "(a container of sub-datasets?); extract one band set to GeoTIFF")
        if ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette:
            yield ds, None
            return
        dtypes = {np.dtype(t) for t in ds.dtypes}
        bad = sorted(str(t) for t in dtypes - set(SUPPORTED_DTYPES))
        if bad:
            raise DataError(f"image {path} has {', '.join(bad)} pixels; supported: "
                            f"{', '.join(str(t) for t in SUPPORTED_DTYPES)}")
        # Bands of different types (possible in a VRT) share the widest one.
        yield ds, np.result_type(*dtypes)


def describe(ds, bands: int) -> tuple:
    """What ``read_raster`` keeps of an open dataset beyond its pixels: (whether it has a
    per-dataset mask band, georef, band descriptions, metadata); ``bands``: the band count
    read (a palette image's expanded bands)."""
    palette = ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette
    names = tuple(d or None for d in ds.descriptions)
    # An expanded palette's bands are new: only the dataset's tags still apply.
    metadata = (_read_metadata(ds) if not palette
                else RasterMetadata(tags=ds.tags(), bands=bands))
    return (bool(metadata.dataset_mask), _read_georef(ds, palette),
            names if any(names) else None, metadata)


def _check_nodata(nodata: float, dtype: np.dtype) -> None:
    if dtype.kind == "f":
        return  # NaN, inf and any finite value are representable (float32 rounds)
    if not math.isfinite(nodata) or nodata != int(nodata):
        raise DataError(f"nodata {nodata} is not an integer, so it cannot mark {dtype} pixels")
    info = np.iinfo(dtype)
    if not info.min <= nodata <= info.max:
        raise DataError(f"nodata {nodata} is outside the {dtype} range [{info.min}, {info.max}]")


def _check_format(path: Path, raster: Raster, cog: bool = False) -> str:
    """Returns the GDAL driver for ``path``, or raises if the format cannot hold ``raster``."""
    suffix = path.suffix.lower()
    if cog and suffix not in GEOTIFF_SUFFIXES:
        raise DataError(f"{path}: a Cloud-Optimized GeoTIFF (--cog) is a GeoTIFF; give the "
                        "output a .tif or .tiff suffix")
    if suffix in (".jpg", ".jpeg"):
        raise DataError(f"{path}: JPEG output would re-encode the image lossily; write "
                        ".tif (any image), .png (8/16-bit, 1-4 bands) or .jp2 instead")
    if suffix not in WRITE_DRIVERS:
        raise DataError(f"{path}: unknown output suffix {suffix or '(none)'!r}; use "
                        + ", ".join(WRITE_DRIVERS))
    dtype, bands = raster.pixels.dtype, raster.bands
    if dtype not in SUPPORTED_DTYPES:
        raise DataError(f"cannot write {dtype} pixels; supported: "
                        f"{', '.join(str(t) for t in SUPPORTED_DTYPES)}")
    if suffix == ".png" and (dtype not in PNG_DTYPES or bands > 4):
        raise DataError(f"{path}: PNG holds only uint8/uint16 images of 1-4 bands, not "
                        f"{bands} band(s) of {dtype}; write a .tif (GeoTIFF) instead")
    if suffix == ".jp2" and dtype not in JP2_DTYPES:
        raise DataError(f"{path}: lossless JPEG 2000 holds only uint8/uint16/int16 pixels, "
                        f"not {dtype}; write a .tif (GeoTIFF) instead")
    georef = raster.georef
    if georef is not None:
        if georef.transform is not None and len(georef.transform) != 6:
            raise DataError(f"georef transform needs 6 coefficients, got {georef.transform}")
        if georef.nodata is not None:
            _check_nodata(float(georef.nodata), dtype)
    return WRITE_DRIVERS[suffix]


def _lost(driver: str, raster: Raster) -> list[str]:
    """Names what the output format cannot store of ``raster``."""
    georef, lost = raster.georef, []
    if driver == "PNG" and georef is not None:
        if georef.crs is not None or georef.transform is not None:
            lost.append("CRS/transform")
        # PNG marks nodata with a tRNS chunk, which exists for gray and RGB but not with alpha.
        if georef.nodata is not None and raster.bands not in (1, 3):
            lost.append("nodata")
    if driver == "JP2OpenJPEG" and georef is not None and georef.nodata is not None:
        lost.append("nodata")  # GDAL keeps JP2 nodata only in a .aux.xml sidecar
    if driver != "GTiff":
        if raster.band_descriptions is not None:
            lost.append("band descriptions")
        meta = raster.metadata
        if meta.units or meta.scales or meta.offsets:
            lost.append("units/scales/offsets")
        if meta.band_tags or set(meta.tags) - {"AREA_OR_POINT"}:
            lost.append("tags")
        if georef is not None and (georef.gcps or georef.rpcs):
            lost.append("GCPs/RPCs")
        if raster.missing is not None:
            lost.append("mask band")
    return lost


def _profile(driver: str, raster: Raster) -> dict:
    dtype, georef = raster.pixels.dtype, raster.georef
    profile = dict(driver=driver, count=raster.bands, height=raster.height, width=raster.width,
                   dtype=dtype.name)
    if georef is not None:
        if georef.crs is not None and driver != "PNG":
            profile["crs"] = CRS.from_user_input(georef.crs)
        if georef.transform is not None and driver != "PNG":
            profile["transform"] = Affine(*georef.transform)
        if georef.nodata is not None and "nodata" not in _lost(driver, raster):
            profile["nodata"] = georef.nodata
    if driver == "GTiff":
        # Horizontal differencing makes smooth imagery deflate far better, losslessly.
        profile.update(compress="deflate", predictor=3 if dtype.kind == "f" else 2,
                       bigtiff="if_safer")
        if raster.height >= TILE and raster.width >= TILE:
            profile.update(tiled=True, blockxsize=TILE, blockysize=TILE)
    elif driver == "JP2OpenJPEG":
        # QUALITY=100 with the reversible wavelet is bit-exact; CODEC is explicit because the
        # temporary file's suffix is not .jp2 and GDAL would otherwise write a bare J2K stream.
        profile.update(reversible="YES", quality="100", codec="JP2", ycc="NO")
    return profile


def _write(tmp: Path, driver: str, raster: Raster, cog: bool = False, blocks=None) -> None:
    """Writes ``raster`` to ``tmp`` with ``driver`` (chosen explicitly, not by suffix); a COG
    is a GeoTIFF written beside it first and copied by GDAL's COG driver. ``blocks(ds)``,
    if given, writes the pixels (and the mask band) instead of ``raster``'s."""
    # No .aux.xml sidecar: it would be named after the temporary file and left behind.
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if cog:
            staging = tmp.with_name(tmp.name + ".gtiff")
            try:
                _write(staging, driver, raster, blocks=blocks)
                # Overviews already in the staging file are kept, else made (AUTO).
                rasterio.shutil.copy(staging, tmp, driver="COG", compress="DEFLATE",
                                     predictor="YES", overviews="AUTO", resampling="AVERAGE",
                                     bigtiff="IF_SAFER")
            finally:
                staging.unlink(missing_ok=True)
            return
        profile = _profile(driver, raster)
        if blocks is not None and raster.bands > BLOCK_PIXEL_INTERLEAVE_BANDS:
            # Written a band group at a time: each band's tiles then are written once.
            profile["interleave"] = "band"
        with rasterio.open(tmp, "w", **profile) as ds:
            if blocks is not None:
                blocks(ds)
            else:
                ds.write(raster.pixels)
            if driver == "GTiff":
                _write_metadata(ds, raster)
        if driver == "GTiff" and raster.metadata.overviews:
            with rasterio.open(tmp, "r+") as ds:
                ds.build_overviews(list(raster.metadata.overviews), Resampling.average)


def _write_metadata(ds, raster: Raster) -> None:
    """Everything of ``raster`` a GeoTIFF holds beyond pixels, CRS, transform and nodata."""
    meta, georef = raster.metadata, raster.georef
    for band, name in enumerate(raster.band_descriptions or (), start=1):
        if name:
            ds.set_band_description(band, name)
    if meta.tags:
        ds.update_tags(**meta.tags)
    for band, tags in enumerate(meta.band_tags or (), start=1):
        if tags:
            ds.update_tags(band, **tags)
    if meta.colorinterp is not None:
        # A name this rasterio does not know (a newer GDAL's) is left at GDAL's default.
        known = ColorInterp.__members__
        ds.colorinterp = [known.get(c, ColorInterp.undefined) for c in meta.colorinterp]
    if meta.units is not None:
        ds.units = meta.units
    if meta.scales is not None:
        ds.scales = meta.scales
    if meta.offsets is not None:
        ds.offsets = meta.offsets
    if georef is not None and georef.gcps:
        points = [GroundControlPoint(p.row, p.col, p.x, p.y, p.z, p.id, p.info)
                  for p in georef.gcps]
        ds.gcps = (points, CRS.from_user_input(georef.gcp_crs) if georef.gcp_crs else None)
    if georef is not None and georef.rpcs is not None:
        ds.rpcs = RPC(**georef.rpcs)
    if raster.missing is not None:
        ds.write_mask(np.where(raster.missing, 0, 255).astype(np.uint8))


def write_raster(path: str | os.PathLike, raster: Raster, *, force: bool = False,
                 source: str | os.PathLike | None = None, cog: bool = False,
                 blocks=None) -> Path:
    """Writes ``raster`` to ``path`` atomically, in the format its suffix names.

    With ``blocks`` (GeoTIFF only), ``raster.pixels`` only gives the shape and dtype (a
    ``numpy.broadcast_to`` of one value will do) and ``blocks(ds)`` writes the pixels and
    the mask band into the open rasterio dataset window by window, so that the image is
    never whole in memory (``runtime.rasterblocks``); with more than 3 bands the GeoTIFF is
    then band-interleaved.

    Nothing is written unless the whole file is: the image goes to a temporary file beside
    ``path`` that replaces it at the end. A .png/.jp2 output that cannot store part of the
    georeferencing or band descriptions is still written, with a ``UserWarning``.

    Args:
        path: Output file, ending in .tif/.tiff, .png or .jp2 (see the module docstring).
        raster: The image to write.
        force: Replace ``path`` if it exists.
        source: The input file the raster came from; writing over it is refused even with
            ``force``, so that a typo cannot destroy the only copy of an image.
        cog: Write a Cloud-Optimized GeoTIFF (GDAL's COG driver: tiled, overviews, deflate);
            only for a .tif/.tiff ``path``.

    Returns:
        ``path`` as a Path.

    Raises:
        DataError: The suffix is unknown or JPEG, or the format cannot hold the raster's
            dtype/band count (the message suggests .tif), ``cog`` is asked for another
            suffix than .tif/.tiff, or GDAL fails to write.
        OutputExistsError: ``path`` exists and ``force`` is False, or ``path`` is ``source``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ms.tif"
        >>> pixels = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
        >>> georef = Georeference(crs="EPSG:32633",
        ...                       transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
        ...                       nodata=0.0)
        >>> _ = write_raster(path, Raster(pixels, georef, ("B2", "B3", "B4", "B8", None)))
        >>> back = read_raster(path)
        >>> bool((back.pixels == pixels).all()), back.band_descriptions
        (True, ('B2', 'B3', 'B4', 'B8', None))
        >>> back.georef.crs, back.georef.nodata
        ('EPSG:32633', 0.0)
        >>> write_raster(path, Raster(pixels))
        Traceback (most recent call last):
        ...
        stcm.errors.OutputExistsError: ...ms.tif exists; pass --force (force=True) to overwrite it
    """
    path = Path(path)
    _check_shape(raster)
    driver = _check_format(path, raster, cog)
    if source is not None and same_file(path, source):
        raise OutputExistsError(f"{path} is the input image; refusing to write over it (even "
                                "with --force): choose another output file")
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give an output file name")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
    lost = _lost(driver, raster)
    if lost:
        warnings.warn(f"{path.suffix} cannot store the {', '.join(lost)} of this image, which "
                      f"will be missing from {path}; write a .tif to keep them", stacklevel=2)
    if blocks is not None and driver != "GTiff":
        raise DataError(f"{path}: only GeoTIFF output is written block by block")
    with atomic_path(path) as tmp:
        try:
            _write(tmp, driver, raster, cog, blocks)
        except StcmError:  # the blocks' own (a corrupt stream...)
            raise
        except Exception as exc:  # GDAL: disk full, permission, driver limits...
            raise DataError(f"cannot write {path}: {exc}") from exc
    return path
