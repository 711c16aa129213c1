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


# GDAL reads a truncated PNG or JPEG without an error: the missing rows are whatever memory
# held. Pillow's decoder notices, so these formats are decoded once by it first.
_CHECKED_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_complete(path: str | Path) -> None:
    """DataError when a PNG or JPEG file is truncated or damaged (other formats: nothing)."""
    if Path(path).suffix.lower() not in _CHECKED_SUFFIXES:
        return
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
    except Image.DecompressionBombError:
        return  # beyond Pillow's size guard; GDAL reads it without one
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for damaged data
        raise DataError(f"cannot read image {path}: it is truncated or damaged ({exc})") from exc


@contextlib.contextmanager
def open_raster(path: str | Path):
    """Opens ``path`` for reading; any rasterio/GDAL failure, and a truncated PNG or JPEG,
    becomes a DataError naming it."""
    check_complete(path)
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
