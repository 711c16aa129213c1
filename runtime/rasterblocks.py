"""Image files as block sources and GeoTIFFs as block sinks (rasterio windows), so that
``compress_file`` and ``decompress_file`` never hold a scene whole (``runtime.scene``).

GDAL's block cache is capped at ``GDAL_CACHE_MB`` while they run: left alone it may grow to
5 % of the machine's memory with the blocks of a large file.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import rasterio
from rasterio.windows import Window

from stcm.runtime.header import Header
from stcm.runtime.imageio import describe, open_image
from stcm.runtime.scene import ArraySource, BlockSource, PixelSink

GDAL_CACHE_MB = 256


def gdal_env() -> rasterio.Env:
    """The GDAL settings of block-by-block reading and writing."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_PAM_ENABLED="NO")


class RasterSource(BlockSource):
    """An open rasterio dataset read window by window, with its per-dataset mask band."""

    def __init__(self, ds, dtype: np.dtype, masked: bool):
        self.ds, self.dtype, self.masked = ds, np.dtype(dtype), masked
        self.bands, self.height, self.width = ds.count, ds.height, ds.width

    def read(self, rows, cols, bands):
        (r0, r1), (c0, c1) = rows, cols
        window = Window(c0, r0, c1 - c0, r1 - r0)
        pixels = self.ds.read([b + 1 for b in bands], window=window, out_dtype=self.dtype)
        missing = self.ds.dataset_mask(window=window) == 0 if self.masked else None
        return pixels, missing


@contextlib.contextmanager
def open_source(path: str | os.PathLike):
    """Yields (a ``BlockSource`` of the image file, its georef, band descriptions and
    metadata: what ``read_raster`` returns beside the pixels). A palette image is expanded
    whole (``read_raster``); any other is read by windows."""
    with gdal_env(), open_image(path) as (ds, dtype):
        if dtype is None:
            from stcm.runtime.imageio import read_raster

            raster = read_raster(path)
            yield (ArraySource(raster.pixels, raster.missing), raster.georef,
                   raster.band_descriptions, raster.metadata)
            return
        masked, georef, names, metadata = describe(ds, ds.count)
        yield RasterSource(ds, dtype, masked), georef, names, metadata


class GeoTiffSink(PixelSink):
    """Decoded blocks written into an open rasterio dataset's windows, and, with
    ``dataset_mask``, its mask band (the samples missing in every band) from the header's
    mask: 0 where missing, 255 elsewhere."""

    def __init__(self, ds, dataset_mask: bool):
        self.ds, self.dataset_mask = ds, dataset_mask
        self.header: Header | None = None
        self.window = (0, 0, 0, 0)

    def open(self, header, window):
        self.header, self.window = header, window

    def write(self, bands, rows, cols, pixels):
        (r0, r1), (c0, c1) = rows, cols
        window = Window(c0, r0, c1 - c0, r1 - r0)
        self.ds.write(pixels, [b + 1 for b in bands], window=window)
        if self.dataset_mask and bands.start == 0:  # once per block, with the first group
            h = self.header
            valid = np.full((r1 - r0, c1 - c0), 255, np.uint8)
            if h.mask is not None:
                col, row = self.window[:2]
                missing = h.mask.window(h.height, h.width, h.bands, (row + r0, row + r1),
                                        (col + c0, col + c1))
                valid[missing.all(axis=0)] = 0
            self.ds.write_mask(valid, window=window)
