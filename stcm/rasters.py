"""Opening raster files with rasterio, shared by training data and the runtime's image I/O."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from stcm.errors import DataError

#: Suffixes of the raster files stcm reads (rasterio may read more; these are the ones
#: promised), for training data and the runtime alike.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2")


@contextlib.contextmanager
def open_raster(path: str | Path):
    """Opens ``path`` for reading; any rasterio/GDAL failure becomes a DataError naming it."""
    try:
        with warnings.catch_warnings():
            # A plain PNG or JPEG has no georeference; that is normal, not worth a warning.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                yield ds
    except DataError:
        raise
    except Exception as exc:  # rasterio and GDAL raise a zoo of types for bad files
        raise DataError(f"cannot read image {path}: {exc}") from exc
