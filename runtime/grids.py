"""Putting a temporal reference on the pixel grid of the image it helps code.

The temporal context reads the reference's latent position by position, so it only helps
where position (i, j) of both latents shows the same ground. Real revisits are on other grids
(another footprint, pixel size or sensor). The encoder finds the mapping from this image's
pixel coordinates to the reference's: from the two georeferences when both have one
(``georeferenced_mapping``; an affine fit when the coordinate systems differ), else by phase
correlation of the decoded reference with this image (``estimate_shift``). The mapping is
stored in the header (format 2.2) and both sides resample the reference's decoded latent
onto this image's latent grid with ``resample_latent``: NumPy arithmetic on values the
header fixes, so encoder and decoder compute the same side input on any machine, and exact
decoding across backends holds. The temporal context, like g_a, does not follow shifts of a
fraction of a latent position (a bilinear mix of latent positions costs more bits than no
reference), so a shift by whole pixels is met in one of two ways (``reference_grid``): a
model with latent shift tables keeps the image on its grid and moves the reference's latent
by the remainder in latent space (``stcm.shift_tables``; georeferenced translations are
first corrected by phase correlation, ``refine_translation``); other models move this image
on a coded canvas so that the latent positions line up, and the latent by whole positions.
Ground the reference does not show gets a zero latent, the side input of an image coded
alone.

A mapping is 6 numbers (a, b, c, d, e, f): pixel (col, row) of this image, in GDAL's
pixel-corner convention, lies at (a*col + b*row + c, d*col + e*row + f) of the reference.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_points

from stcm.errors import DataError
from stcm.runtime.georeference import Georeference
from stcm.runtime.header import DOWNSAMPLE, IDENTITY_GRID, ReferenceGrid, check_mapping

Mapping = tuple[float, float, float, float, float, float]

# Mappings closer than this to the identity are the identity: the pixel sizes to this
# relative precision, the origins to this fraction of a pixel (1/1600 of a latent position).
PIXEL_SIZE_RTOL = 1e-6
ORIGIN_TOL_PX = 0.01
# An affine fit of a reprojection that misses by more than this (pixels) somewhere on the
# image would put the reference's latent on the wrong ground: refused.
MAX_FIT_ERROR_PX = 4.0
# Fractional sample positions are rounded to this grid (1/256 of a latent position) before
# interpolating, so that the weights and indexes are exact integers' worth of arithmetic.
SUBSTEPS = 256
# Phase correlation: the common area it looks at, the smallest it trusts, how far the peak
# must stand above the correlation surface (in standard deviations), and the smallest shift
# worth a header field (1/16 of a latent position).
SHIFT_MAX_SIDE = 1024
SHIFT_MIN_SIDE = 64
SHIFT_MIN_PEAK_SIGMA = 12.0
SHIFT_MIN_PX = 1.0


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except CRSError:
        return False


def is_identity(mapping: Mapping) -> bool:
    """Whether ``mapping`` moves no pixel of an image by more than the tolerances."""
    a, b, c, d, e, f = mapping
    return (all(math.isclose(x, y, rel_tol=PIXEL_SIZE_RTOL, abs_tol=PIXEL_SIZE_RTOL)
                for x, y in ((a, 1.0), (b, 0.0), (d, 0.0), (e, 1.0)))
            and abs(c) <= ORIGIN_TOL_PX and abs(f) <= ORIGIN_TOL_PX)


def _fit_reprojection(reference: Georeference, current: Georeference,
                      shape: tuple[int, int]) -> Mapping:
    """The affine that best maps this image's pixels to the reference's across two coordinate
    systems, from a 9x9 grid of points over the image; DataError if it misses somewhere."""
    h, w = shape
    cols, rows = np.meshgrid(np.linspace(0, w, 9), np.linspace(0, h, 9))
    cols, rows = cols.ravel(), rows.ravel()
    xs, ys = Affine(*current.transform) @ (cols, rows)
    try:
        rx, ry = warp_points(current.crs, reference.crs, list(xs), list(ys))
    except Exception as exc:  # rasterio raises its own and PROJ's errors here
        raise DataError(f"cannot transform this image's coordinates ({current.crs:.60}) to "
                        f"the reference's ({reference.crs:.60}): {exc}") from exc
    rc, rr = ~Affine(*reference.transform) @ (np.asarray(rx), np.asarray(ry))
    if not (np.all(np.isfinite(rc)) and np.all(np.isfinite(rr))):
        raise DataError("this image does not lie within the reference's coordinate system's "
                        "valid area: not the same place")
    design = np.stack([cols, rows, np.ones_like(cols)], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(design, rc, rcond=None)
    (d, e, f), *_ = np.linalg.lstsq(design, rr, rcond=None)
    miss = np.hypot(design @ (a, b, c) - rc, design @ (d, e, f) - rr).max()
    if miss > MAX_FIT_ERROR_PX:
        raise DataError(f"the reprojection from this image's coordinate system to the "
                        f"reference's is not affine over the image (an affine fit misses by "
                        f"{miss:.1f} pixels): reproject one onto the other's grid first "
                        "(rasterio.warp.reproject or gdalwarp)")
    return tuple(float(v) for v in (a, b, c, d, e, f))


def georeferenced_mapping(reference: Georeference | None, current: Georeference | None,
                          reference_size: tuple[int, int], size: tuple[int, int]
                          ) -> Mapping | None:
    """The mapping from this image's pixels to the reference's given by their georeferencing,
    ``IDENTITY_GRID`` when they lie on one grid, or None when either lacks a transform.

    A missing CRS on one side is taken to be the other's. ``reference_size`` and ``size`` are
    (height, width). Raises DataError when the images do not overlap on the ground or their
    coordinate systems cannot be related by an affine mapping over the image.
    """
    if (reference is None or current is None or reference.transform is None
            or current.transform is None):
        return None
    try:
        inverse = ~Affine(*reference.transform)
    except Exception as exc:  # a degenerate transform: affine.TransformNotInvertibleError
        raise DataError(f"the reference's geotransform {reference.transform} is not "
                        "invertible") from exc
    if reference.crs and current.crs and not _same_crs(reference.crs, current.crs):
        mapping = _fit_reprojection(reference, current, size)
    else:
        mapping = tuple((inverse @ Affine(*current.transform))[:6])
    mapping = IDENTITY_GRID if is_identity(mapping) else mapping
    _check_overlap(mapping, reference_size, size)
    return mapping


def _check_overlap(mapping: Mapping, reference_size: tuple[int, int],
                   size: tuple[int, int]) -> None:
    h, w = size
    corners = np.array([(0, 0), (w, 0), (0, h), (w, h)], float)
    a, b, c, d, e, f = mapping
    cols = a * corners[:, 0] + b * corners[:, 1] + c
    rows = d * corners[:, 0] + e * corners[:, 1] + f
    rh, rw = reference_size
    if cols.max() <= 0 or cols.min() >= rw or rows.max() <= 0 or rows.min() >= rh:
        raise DataError(f"the reference and this image do not overlap on the ground (this "
                        f"image covers columns {cols.min():.0f}..{cols.max():.0f} and rows "
                        f"{rows.min():.0f}..{rows.max():.0f} of the {rw}x{rh} reference): not "
                        "the same place")


def _luminance(image: np.ndarray) -> np.ndarray:
    """(bands, H, W) -> (H, W): the mean of the bands, each standardised (sensors differ)."""
    x = np.asarray(image, np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).mean(axis=0)


def estimate_shift(reference: np.ndarray, image: np.ndarray) -> tuple[float, float] | None:
    """The translation (columns, rows) from this image's pixels to the reference's, by phase
    correlation of the two (bands, H, W) images over their common top-left area; None when
    it is too small, the correlation has no clear peak (not the same place, or too changed)
    or the shift is below ``SHIFT_MIN_PX``. Shifts up to half the area's side are seen."""
    a, b = _luminance(reference), _luminance(image)
    h = min(a.shape[0], b.shape[0], SHIFT_MAX_SIDE)
    w = min(a.shape[1], b.shape[1], SHIFT_MAX_SIDE)
    if h < SHIFT_MIN_SIDE or w < SHIFT_MIN_SIDE:
        return None
    window = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.rfft2((a[:h, :w] - a[:h, :w].mean()) * window)
    fb = np.fft.rfft2((b[:h, :w] - b[:h, :w].mean()) * window)
    cross = fa * np.conj(fb)
    cross /= np.maximum(np.abs(cross), 1e-12)
    surface = np.fft.irfft2(cross, s=(h, w))
    row, col = np.unravel_index(np.argmax(surface), surface.shape)
    peak = surface[row, col]
    if peak < SHIFT_MIN_PEAK_SIGMA * surface.std():
        return None

    def refine(minus, centre, plus):  # a parabola through the peak and its neighbours
        denom = minus - 2 * centre + plus
        return 0.5 * (minus - plus) / denom if denom < 0 else 0.0

    dy = row + refine(surface[row - 1, col], peak, surface[(row + 1) % h, col])
    dx = col + refine(surface[row, col - 1], peak, surface[row, (col + 1) % w])
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    if math.hypot(dx, dy) < SHIFT_MIN_PX:
        return None
    return float(dx), float(dy)


def is_translation(mapping: Mapping) -> bool:
    """Whether ``mapping`` keeps the pixel size and orientation (moves pixels only)."""
    a, b, _, d, e, _ = mapping
    return all(math.isclose(x, y, rel_tol=PIXEL_SIZE_RTOL, abs_tol=PIXEL_SIZE_RTOL)
               for x, y in ((a, 1.0), (b, 0.0), (d, 0.0), (e, 1.0)))


def refine_translation(mapping: Mapping, reference_pixels: np.ndarray, size: tuple[int, int],
                       read: Callable[[tuple[int, int], tuple[int, int]], np.ndarray]
                       ) -> Mapping:
    """A translation ``mapping`` (from georeferencing, often a few pixels off between two
    dates: co-registration errors) corrected by phase correlation of the reference's
    decoded pixels with this image's over the area the mapping says they share.
    ``read((r0, r1), (c0, c1))`` reads that window of this image, of ``size`` (height,
    width) pixels. Unchanged when the correlation finds no clear shift of a pixel or more."""
    _, _, c, _, _, f = mapping
    ox, oy = round(c), round(f)  # reference pixel of this image's pixel (0, 0)
    r_top, r_left = max(oy, 0), max(ox, 0)
    i_top, i_left = max(-oy, 0), max(-ox, 0)
    rh, rw = reference_pixels.shape[1:]
    h = min(rh - r_top, size[0] - i_top, SHIFT_MAX_SIDE)
    w = min(rw - r_left, size[1] - i_left, SHIFT_MAX_SIDE)
    if h < SHIFT_MIN_SIDE or w < SHIFT_MIN_SIDE:
        return mapping
    image = read((i_top, i_top + h), (i_left, i_left + w))
    shift = estimate_shift(reference_pixels[:, r_top:r_top + h, r_left:r_left + w], image)
    if shift is None:
        return mapping
    return (1.0, 0.0, float(ox + shift[0]), 0.0, 1.0, float(oy + shift[1]))


def reference_grid(mapping: Mapping, latent_shift: bool = False) -> ReferenceGrid | None:
    """How to code an image whose pixels lie at ``mapping`` of the reference (None: on its
    grid). A translation is met exactly up to half a pixel. With ``latent_shift`` (the model
    has shift tables) the image stays on its own grid and the reference's latent moves, by
    whole positions and the remainder in latent space (a ``shifted`` grid). Without, the
    canvas starts with the shift's remainder modulo 16 of replicated edge, so that the
    canvas's latent positions fall on the reference's and the latent moves by whole
    positions (a copy); the extra canvas costs bits of its own (a latent row and column more
    on most sizes). Any other mapping (another pixel size, a rotation) resamples the latent
    bilinearly, which only approximates the latent of the reference seen on this grid."""
    if is_identity(mapping):
        return None
    a, b, c, d, e, f = mapping
    if not is_identity((a, b, 0.0, d, e, 0.0)):
        return ReferenceGrid((0, 0), mapping)
    dx, dy = round(c), round(f)
    if latent_shift:
        if (dx, dy) == (0, 0):
            return None
        whole = dx % DOWNSAMPLE == 0 and dy % DOWNSAMPLE == 0
        return ReferenceGrid((0, 0), (1.0, 0.0, float(dx), 0.0, 1.0, float(dy)), not whole)
    top, left = dy % DOWNSAMPLE, dx % DOWNSAMPLE
    shift = (1.0, 0.0, float(dx - left), 0.0, 1.0, float(dy - top))
    if (top, left) == (0, 0) and shift == IDENTITY_GRID:
        return None
    return ReferenceGrid((top, left), shift)


def nearest_cells(grid: ReferenceGrid) -> ReferenceGrid | None:
    """A canvas or shifted grid's translation rounded to whole latent positions with no
    canvas (origin 0) and no latent shift: the image stays on its own grid and the
    reference's latent moves by a copy, up to half a position (8 pixels) off the ground;
    None when that is no move."""
    top, left = grid.origin
    _, _, c, _, _, f = grid.mapping
    dx = DOWNSAMPLE * round((c + left) / DOWNSAMPLE)
    dy = DOWNSAMPLE * round((f + top) / DOWNSAMPLE)
    if (dx, dy) == (0, 0):
        return None
    return ReferenceGrid((0, 0), (1.0, 0.0, float(dx), 0.0, 1.0, float(dy)))


def resample_latent(latent: np.ndarray, mapping: Mapping | None,
                    reference_size: tuple[int, int], latent_shape: tuple[int, int]
                    ) -> np.ndarray:
    """The reference's latent (channels, h_r, w_r) seen from this image's latent grid
    ``latent_shape``: bilinear at the centre of each position's 16x16 pixels mapped by
    ``mapping`` (None: the identity), zero where that point is off the reference's
    ``reference_size`` (height, width) pixels. Deterministic: float32 products and sums in a
    fixed order of weights that are multiples of 1/SUBSTEPS."""
    latent = np.asarray(latent, np.float32)
    if latent.ndim != 3:
        raise ValueError(f"expected a latent (channels, h, w), got shape {latent.shape}")
    h, w = latent_shape
    if (mapping is None or mapping == IDENTITY_GRID) and latent.shape[1:] == (h, w):
        return latent
    check_mapping(mapping or IDENTITY_GRID)
    a, b, c, d, e, f = mapping or IDENTITY_GRID
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64) * DOWNSAMPLE + DOWNSAMPLE / 2,
                             np.arange(w, dtype=np.float64) * DOWNSAMPLE + DOWNSAMPLE / 2,
                             indexing="ij")
    x = a * cols + b * rows + c  # the reference's pixel coordinates
    y = d * cols + e * rows + f
    rh, rw = reference_size
    inside = (x >= 0) & (x < rw) & (y >= 0) & (y < rh)
    lh, lw = latent.shape[1:]
    # Latent position k of the reference is centred on pixel 16k + 8; positions between the
    # last centre and the image's edge take the edge's value.
    u = np.clip(np.rint((x / DOWNSAMPLE - 0.5) * SUBSTEPS), 0, (lw - 1) * SUBSTEPS)
    v = np.clip(np.rint((y / DOWNSAMPLE - 0.5) * SUBSTEPS), 0, (lh - 1) * SUBSTEPS)
    u, v = u.astype(np.int64), v.astype(np.int64)
    u0, v0 = u // SUBSTEPS, v // SUBSTEPS
    fu = ((u % SUBSTEPS) / SUBSTEPS).astype(np.float32)
    fv = ((v % SUBSTEPS) / SUBSTEPS).astype(np.float32)
    u1, v1 = np.minimum(u0 + 1, lw - 1), np.minimum(v0 + 1, lh - 1)
    one = np.float32(1)
    out = ((one - fu) * (one - fv)) * latent[:, v0, u0]
    out = out + (fu * (one - fv)) * latent[:, v0, u1]
    out = out + ((one - fu) * fv) * latent[:, v1, u0]
    out = out + (fu * fv) * latent[:, v1, u1]
    return np.where(inside, out, np.float32(0)).astype(np.float32)
