"""Whether a temporal reference lies on the same pixel grid as the image it helps code.

The temporal context reads the reference's latent position by position, so it only helps
when pixel (row, col) of both images shows the same ground. stcm does not co-register
references yet; it refuses, with what differs, a georeferenced pair that is not on one
grid, rather than code it against the wrong ground. Pairs without georeferencing are
trusted to be co-registered.
"""
from __future__ import annotations

import math

from rasterio.crs import CRS
from rasterio.errors import CRSError

from stcm.errors import DataError
from stcm.runtime.header import Georeference

# Grids agree when the pixel sizes agree to this relative precision and the origins to this
# fraction of a pixel: below what any resampling could correct.
PIXEL_SIZE_RTOL = 1e-6
ORIGIN_TOL_PX = 0.01

_ADVICE = ("stcm does not co-register references yet: resample one image onto the other's "
           "grid first (rasterio.warp.reproject, or gdalwarp with -te/-tr of the other image)")


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except CRSError:
        return False


def check_same_grid(reference: Georeference | None, current: Georeference | None,
                    shape: tuple[int, int]) -> None:
    """Raises DataError unless the reference (georeferencing of its container) and the
    current image (``shape`` = its (height, width), equal for both) lie on one pixel grid;
    passes when either lacks a CRS or transform."""
    if reference is None or current is None:
        return
    if reference.crs and current.crs and not _same_crs(reference.crs, current.crs):
        raise DataError(f"the reference is in another coordinate system ({reference.crs:.60}) "
                        f"than this image ({current.crs:.60}); {_ADVICE}")
    if reference.transform is None or current.transform is None:
        return
    ra, rb, rc, rd, re, rf = reference.transform
    ca, cb, cc, cd, ce, cf = current.transform
    if not all(math.isclose(x, y, rel_tol=PIXEL_SIZE_RTOL, abs_tol=1e-12)
               for x, y in ((ra, ca), (rb, cb), (rd, cd), (re, ce))):
        raise DataError(f"the reference has another pixel size or orientation ({ra:g}, {re:g} "
                        f"vs {ca:g}, {ce:g} per pixel); {_ADVICE}")
    # The current origin in the reference's pixel coordinates: invert the 2x2 part.
    det = ra * re - rb * rd
    dx, dy = cc - rc, cf - rf
    col = (re * dx - rb * dy) / det
    row = (-rd * dx + ra * dy) / det
    if abs(col) <= ORIGIN_TOL_PX and abs(row) <= ORIGIN_TOL_PX:
        return
    height, width = shape
    if abs(col) >= width or abs(row) >= height:
        raise DataError(f"the reference and this image do not overlap on the ground (this "
                        f"image starts {col:.1f} columns, {row:.1f} rows from the reference's "
                        "origin): not the same place")
    raise DataError(f"the reference is shifted by {col:.2f} columns and {row:.2f} rows against "
                    f"this image; {_ADVICE}")
