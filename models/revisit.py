"""Synthetic revisits: a plausible second acquisition of the same place (NumPy only).

The temporal context model codes an image given an earlier image of the same place. No real
multi-temporal pairs of useful size are available offline, so training pairs are SYNTHETIC:
the current image is derived from the reference by the effects that separate two real passes
of a satellite over one scene:

- mis-registration: a sub-pixel shift of up to 1.5 px (bilinear, edges clamped);
- local abrupt change: up to 3 rectangles (new buildings, harvested fields) replaced by a
  flipped patch from elsewhere in the image or by a flat colour;
- radiometric change: per-band gain and offset (sun angle, sensor calibration, season);
- haze: a smooth, spatially varying blend toward a bright haze colour;
- sensor noise: Gaussian, sigma up to 0.01.

Real co-registered pairs, when available, go through ``stcm.models.data.PairSampler`` instead.
"""
from __future__ import annotations

import numpy as np

from stcm.errors import DataError

MAX_SHIFT = 1.5
GAIN_RANGE = (0.85, 1.15)
OFFSET_RANGE = (-0.05, 0.05)
MAX_HAZE = 0.3
MAX_CHANGES = 3
CHANGE_SIDE = (0.05, 0.25)
MAX_NOISE = 0.01


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Samples (C, H, W) ``x`` at fractional ``rows`` x ``cols``, clamped to the image."""
    def taps(pos: np.ndarray, n: int):
        pos = np.clip(pos, 0, n - 1)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (pos - i0).astype(np.float32)

    r0, r1, wr = taps(rows, x.shape[1])
    c0, c1, wc = taps(cols, x.shape[2])
    # Separable: interpolate rows first, then columns.
    t = x[:, r0, :] * (1 - wr)[None, :, None] + x[:, r1, :] * wr[None, :, None]
    return t[:, :, c0] * (1 - wc) + t[:, :, c1] * wc


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random (h, w) field in [0, 1] that varies only over a few cells per side."""
    cells = int(rng.integers(2, 6))
    grid = rng.uniform(0.0, 1.0, (1, cells, cells)).astype(np.float32)
    rows = np.linspace(0, cells - 1, h)
    cols = np.linspace(0, cells - 1, w)
    return _bilinear(grid, rows, cols)[0]


def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    _, h, w = x.shape
    return _bilinear(x, np.arange(h) - dy, np.arange(w) - dx)


def _local_changes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, h, w = x.shape
    for _ in range(int(rng.integers(0, MAX_CHANGES + 1))):
        ph = max(1, int(round(rng.uniform(*CHANGE_SIDE) * h)))
        pw = max(1, int(round(rng.uniform(*CHANGE_SIDE) * w)))
        r, c = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        if rng.random() < 0.5:
            sr, sc = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            patch = x[:, sr:sr + ph, sc:sc + pw]
            # Flipping keeps the patch's texture statistics but makes it new content.
            patch = patch[:, ::-1, :] if rng.random() < 0.5 else patch[:, :, ::-1]
            x[:, r:r + ph, c:c + pw] = patch
        else:
            # The colour of a random pixel of the scene is plausible for a roof or a field.
            colour = x[:, int(rng.integers(0, h)), int(rng.integers(0, w))]
            colour = colour + rng.uniform(-0.1, 0.1, colour.shape).astype(np.float32)
            x[:, r:r + ph, c:c + pw] = colour[:, None, None]
    return x


def synthetic_revisit(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns a synthetic later acquisition of ``image``.

    Args:
        image: (C, H, W) float array with values in [0, 1]; not modified.
        rng: Source of every random parameter, so the result is deterministic given its state.

    Returns:
        float32 array of the same shape, clipped to [0, 1].

    Raises:
        DataError: ``image`` is not a non-empty 3-D real array.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.size == 0:
        raise DataError(f"revisit needs a non-empty (C, H, W) array, "
                        f"got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype.kind not in "uif":
        raise DataError(f"revisit needs real pixel values, got dtype {image.dtype}")
    c, h, w = image.shape
    x = _shift(image.astype(np.float32), rng)  # always a new array: the input stays intact
    x = _local_changes(x, rng)
    gain = rng.uniform(*GAIN_RANGE, c).astype(np.float32)
    offset = rng.uniform(*OFFSET_RANGE, c).astype(np.float32)
    x = x * gain[:, None, None] + offset[:, None, None]
    haze = rng.uniform(0.0, MAX_HAZE) * _smooth_field(rng, h, w)
    haze_colour = rng.uniform(0.75, 1.0, c).astype(np.float32)
    x = x * (1 - haze) + haze * haze_colour[:, None, None]
    sigma = rng.uniform(0.0, MAX_NOISE)
    x = x + np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)
