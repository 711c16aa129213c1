"""Synthetic revisits: a plausible second acquisition of the same place (NumPy only).

The temporal context model codes an image given an earlier image of the same place. No real
multi-temporal pairs of useful size are available offline, so training pairs are SYNTHETIC:
the current image is derived from the reference by the effects that separate two real passes
of a satellite over one scene:

- mis-registration: half the revisits shifted up to 3 px per axis (bilinear, edges clamped):
  what real pairs of two sensors show after orthorectification (0.5-3 px); the other half
  by 0.05-1 px, log-uniform: pairs on one grid (a Sentinel-2 L2A cube), where the detail of
  the two dates still lines up and the temporal context has the most to gain;
- another sensor's resolution: a third of the revisits are blurred through a grid 1-2x
  coarser and back;
- local abrupt change: up to 3 rectangles (new buildings, harvested fields) replaced by a
  flipped patch from elsewhere in the image or by a flat colour;
- another sensor's spectral response: each band mixed with up to 15 % of the others;
- radiometric change: per-band gain and offset (sun angle, sensor calibration, season);
- clouds and their shadows (a quarter of the revisits): soft-edged bright blobs, and the
  same blobs displaced and darkening the ground;
- haze: a smooth, spatially varying blend toward a bright haze colour;
- sensor noise: Gaussian, sigma up to 0.01.

A share of the training pairs is not a revisit at all but an unrelated crop
(``CropSampler(unrelated_share=...)``), so the temporal branch learns to ignore a reference
that does not help.

Real co-registered pairs, when available, go through ``stcm.models.data.PairSampler`` instead.
"""
from __future__ import annotations

import numpy as np

from stcm.errors import DataError

MAX_SHIFT = 3.0
SUBPIXEL_SHARE, SUBPIXEL_SHIFT = 0.5, (0.05, 1.0)
RESAMPLE_PROB, MAX_RESAMPLE = 1 / 3, 2.0
MAX_SPECTRAL_MIX = 0.15
CLOUD_PROB, CLOUD_COVER = 0.25, (0.6, 0.85)  # probability; threshold of the cloud field
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
    if rng.random() < SUBPIXEL_SHARE:
        low, high = np.log(SUBPIXEL_SHIFT)
        dy, dx = np.exp(rng.uniform(low, high, 2)) * rng.choice((-1.0, 1.0), 2)
    else:
        dy, dx = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    _, h, w = x.shape
    return _bilinear(x, np.arange(h) - dy, np.arange(w) - dx)


def _resample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Through a grid 1-2x coarser and back: the later sensor resolves less."""
    _, h, w = x.shape
    f = rng.uniform(1.0, MAX_RESAMPLE)
    hl, wl = max(1, int(round(h / f))), max(1, int(round(w / f)))
    if min(h, w) >= 3:  # a [1, 2, 1] pre-filter against aliasing on the way down
        p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        x = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4
        x = (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 4
    low = _bilinear(x, np.linspace(0, h - 1, hl), np.linspace(0, w - 1, wl))
    return _bilinear(low, np.linspace(0, hl - 1, h), np.linspace(0, wl - 1, w))


def _spectral(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each band mixed with a little of the others (rows sum to 1: the range is kept)."""
    c = x.shape[0]
    if c == 1:
        return x
    mix = rng.uniform(0.0, MAX_SPECTRAL_MIX)
    others = rng.dirichlet(np.ones(c), c).astype(np.float32)
    matrix = (1 - mix) * np.eye(c, dtype=np.float32) + mix * others
    return np.einsum("ij,jhw->ihw", matrix, x).astype(np.float32)


def _clouds(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft bright blobs over the scene and their displaced shadows on it."""
    _, h, w = x.shape
    field = _smooth_field(rng, h, w)
    threshold = rng.uniform(*CLOUD_COVER)
    cloud = np.clip((field - threshold) / 0.08, 0.0, 1.0) * rng.uniform(0.6, 1.0)
    dy, dx = (int(round(rng.uniform(0.05, 0.15) * n * rng.choice((-1, 1)))) for n in (h, w))
    shadow = np.roll(cloud, (dy, dx), axis=(0, 1)) * rng.uniform(0.3, 0.6)
    x = x * (1 - shadow)[None]
    colour = rng.uniform(0.85, 1.0)
    return x * (1 - cloud)[None] + colour * cloud[None]


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
    if rng.random() < RESAMPLE_PROB:
        x = _resample(x, rng)
    x = _local_changes(x, rng)
    x = _spectral(x, rng)
    gain = rng.uniform(*GAIN_RANGE, c).astype(np.float32)
    offset = rng.uniform(*OFFSET_RANGE, c).astype(np.float32)
    x = x * gain[:, None, None] + offset[:, None, None]
    haze = rng.uniform(0.0, MAX_HAZE) * _smooth_field(rng, h, w)
    haze_colour = rng.uniform(0.75, 1.0, c).astype(np.float32)
    x = x * (1 - haze) + haze * haze_colour[:, None, None]
    if rng.random() < CLOUD_PROB:
        x = _clouds(x, rng)
    sigma = rng.uniform(0.0, MAX_NOISE)
    x = x + np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)
