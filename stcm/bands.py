"""How images of any band count and bit depth map onto the 3-band model (NumPy only).

As in the paper (section 3.4), a multispectral image is split into sub-images of 3 bands and
each sub-image is coded by the same 3-band model. When the band count is not a multiple of 3,
the last group repeats its last real band: a repeated band is almost free to code, zeros are not.

Each band is scaled to [0, 1] before coding. 8-bit data uses the fixed range 0..255, so it is
coded exactly like ordinary RGB images. Any other dtype (16-bit, signed, 32-bit, float) is
stretched by the per-band min/max of the whole image; the range is stored next to the
bitstream (``BandNormalization``) so that the decoder restores the original values and dtype.

Missing samples (nodata, a mask band, NaN) are left out of the range, so that a nodata value
of 0 or -9999 does not squeeze the valid pixels into a sliver of [0, 1], and are filled
before coding with a smooth continuation of the valid pixels around them (``fill_missing``),
which costs fewer bits than a constant; the decoder writes them back exactly from the mask.

This module must not import torch: the runtime imports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from stcm.errors import DataError

_FIELDS = ("dtype", "lo", "hi")


def _check_dtype(dtype: Any, what: str) -> np.dtype:
    """Returns ``dtype`` as a NumPy dtype if it is an integer or real float type."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DataError(f"{what}: unknown dtype {dtype!r}") from exc
    if dt.kind not in "uif":
        raise DataError(f"{what}: dtype {dt.name} is not supported; need integer or float pixels")
    return dt


@dataclass(frozen=True)
class BandNormalization:
    """Per-band value range that maps an image to [0, 1] and back.

    Attributes:
        dtype: NumPy dtype name of the original pixels, e.g. ``"uint16"``.
        lo: Per-band value that maps to 0.
        hi: Per-band value that maps to 1; always greater than ``lo``.
    """

    dtype: str
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def __post_init__(self):
        what = "invalid band normalization"
        if not isinstance(self.dtype, str):
            raise DataError(f"{what}: dtype must be a string, got {self.dtype!r}")
        _check_dtype(self.dtype, what)
        lo, hi = self.lo, self.hi
        for name, values in (("lo", lo), ("hi", hi)):
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not values:
                raise DataError(f"{what}: {name} must be a non-empty list of numbers")
            for v in values:
                # bool is an int subclass, but True as a pixel bound is surely a bug.
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise DataError(f"{what}: {name} holds a non-number {v!r}")
                if not math.isfinite(v):
                    raise DataError(f"{what}: {name} holds a non-finite value {v!r}")
        if len(lo) != len(hi):
            raise DataError(f"{what}: lo has {len(lo)} bands but hi has {len(hi)}")
        if any(h <= l for l, h in zip(lo, hi)):
            raise DataError(f"{what}: every band needs hi > lo, got lo={list(lo)} hi={list(hi)}")
        object.__setattr__(self, "lo", tuple(float(v) for v in lo))
        object.__setattr__(self, "hi", tuple(float(v) for v in hi))

    @property
    def bands(self) -> int:
        """Number of bands described."""
        return len(self.lo)

    def to_dict(self) -> dict:
        """Returns a JSON-serialisable dict; ``from_dict`` inverts it exactly."""
        return {"dtype": self.dtype, "lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, data: Any) -> BandNormalization:
        """Builds a normalization from ``to_dict`` output.

        Raises:
            DataError: ``data`` is not a dict with exactly the fields dtype, lo and hi, or a
                field is invalid.
        """
        if not isinstance(data, dict):
            raise DataError(f"band normalization must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _FIELDS if k not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise DataError(f"band normalization needs fields {list(_FIELDS)}; "
                            f"missing {missing}, unknown {unknown}")
        return cls(dtype=data["dtype"], lo=data["lo"], hi=data["hi"])


def _check_image(image: Any, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise DataError(f"{what} must be a NumPy array, got {type(image).__name__}")
    if image.ndim != 3:
        raise DataError(f"{what} must be (bands, height, width), got shape {image.shape}")
    if image.size == 0:
        raise DataError(f"{what} is empty, shape {image.shape}")
    return image


def normalize(image: np.ndarray, missing: np.ndarray | None = None
              ) -> tuple[np.ndarray, BandNormalization]:
    """Scales an image to float32 in [0, 1], per band.

    Args:
        image: (bands, H, W) array of any integer or real float dtype.
        missing: None, or a (bands, H, W) bool array, True where a sample is missing: those
            are left out of the band ranges and filled (``fill_missing``); they may be NaN.

    Returns:
        The scaled image (float32, same shape) and the normalization that inverts it.

    Raises:
        DataError: The array is not 3-D, is empty, has a bool/complex dtype, or holds NaN/inf
            outside ``missing``.
    """
    _check_image(image, "image")
    dt = _check_dtype(image.dtype, "image")
    bands = image.shape[0]
    if missing is not None and (missing.shape != image.shape or missing.dtype != bool):
        raise ValueError(f"missing must be a bool array of the image's shape {image.shape}, "
                         f"got {missing.dtype} {missing.shape}")
    if missing is not None and not missing.any():
        missing = None
    if dt == np.uint8:
        norm = BandNormalization("uint8", (0.0,) * bands, (255.0,) * bands)
        return fill_missing(image.astype(np.float32) / np.float32(255.0), missing), norm
    if dt.kind == "f":
        bad = ~np.isfinite(image)
        if missing is not None:
            bad &= ~missing
        if bad.any():
            b, r, c = (int(i[0]) for i in np.nonzero(bad))
            raise DataError(f"image holds {int(bad.sum())} NaN/inf pixel values "
                            f"(first at band {b}, row {r}, col {c}); mask or fill them first")
    lo, hi = np.zeros(bands), np.ones(bands)  # a band with no valid sample: any range does
    for b in range(bands):
        valid = image[b] if missing is None else image[b][~missing[b]]
        if valid.size:
            lo[b], hi[b] = valid.min(), valid.max()
    hi = np.where(hi > lo, hi, lo + 1.0)  # a constant band maps to 0
    if not np.all(np.isfinite(hi - lo)):
        raise DataError("image value range is too large to normalise (overflows float64)")
    out = np.empty(image.shape, np.float32)
    for b in range(bands):  # per band keeps the float64 temporary small
        out[b] = (image[b].astype(np.float64) - lo[b]) / (hi[b] - lo[b])
    if missing is not None:
        out[missing] = 0.0  # NaN, or out of range: fill_missing replaces them
    np.clip(out, 0.0, 1.0, out=out)
    return (fill_missing(out, missing),
            BandNormalization(dt.name, tuple(lo.tolist()), tuple(hi.tolist())))


def fill_missing(x: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
    """Replaces the missing samples of a normalised (bands, H, W) image, in place, by a smooth
    continuation of the valid ones (pull-push: averages of the valid samples over ever
    coarser 2x2 blocks, brought back down where a block has none); returns ``x``.

    The decoder never sees these values (the mask restores nodata); they only have to be cheap
    to code and leave the valid pixels next to them alone, which a constant disturbs more:
    on the bundled 4-band Sentinel-2 sample with 9 % of it nodata, the band mean gives the
    valid pixels 0.4-0.5 dB less PSNR than pull-push for 0.2-0.9 % fewer bytes (quality
    0.5 and 0.75, the built-in model; ``docs/format.md``, mask).
    """
    if missing is None:
        return x
    for b in range(x.shape[0]):
        if missing[b].any() and not missing[b].all():
            x[b] = np.where(missing[b], _pull_push(x[b].astype(np.float64), ~missing[b]),
                            x[b])
    return x


def _pull_push(v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(H, W) values filled where ``weight`` is 0 from the weighted averages of coarser levels."""
    h, w = v.shape
    if h == 1 and w == 1:
        return v
    coarse, coarse_weight = _pull(v, weight, -(-w // 2) == 1)
    return _push(v, weight, _pull_push(coarse, coarse_weight))


def _pull(v: np.ndarray, weight: np.ndarray, single_column: bool):
    """One level up: the weighted 2x2 averages of (H, W) ``v`` (odd sizes padded with weight
    0) and whether each has any weight; ``single_column``: the whole image's level above
    has one column (it decides the order of the sums, ``_sum_2x2``)."""
    weight = weight.astype(np.float64)
    h, w = v.shape
    ph, pw = h % 2, w % 2
    sums = _sum_2x2(np.pad(v * weight, ((0, ph), (0, pw))), single_column)
    weights = _sum_2x2(np.pad(weight, ((0, ph), (0, pw))), single_column)
    return (np.divide(sums, weights, out=np.zeros_like(sums), where=weights > 0),
            weights > 0)


def _push(v: np.ndarray, weight: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """One level down: ``v`` where it has weight, else the filled level above's value."""
    h, w = v.shape
    up = coarse.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
    return np.where(weight > 0, v, up)


def _sum_2x2(x: np.ndarray, single_column: bool) -> np.ndarray:
    """Sums of the 2x2 blocks of even-sized (H, W) ``x``, in a fixed order: the order of
    NumPy 2's ``x.reshape(-1, 2, W // 2, 2).sum(axis=(1, 3))`` (what stcm <= 0.4 used;
    measured over 529 shapes), which depends on the shape: (a + b) + (c + d), but
    ((a + b) + c) + d for a single output column. Fixed here so that a block of an image
    sums exactly as the whole image does (``fill_levels``)."""
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    return ((a + b) + c) + d if single_column else (a + b) + (c + d)


def fill_levels(v: np.ndarray, weight: np.ndarray, levels: int,
                image_width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pull-push pyramid of a block of a band, ``levels`` levels up: [(v, weight)] from
    the block itself to its level ``levels`` cells.

    The block starts at a multiple of 2**levels and ends there or at the image's edge, of an
    image ``image_width`` wide: its cells then sum exactly as the whole band's would, so
    ``fill_block`` with the whole band's filled level ``levels`` gives exactly the values
    ``fill_missing`` does.
    """
    out = [(v, weight)]
    for level in range(levels):
        single_column = -(-image_width // 2 ** (level + 1)) == 1
        out.append(_pull(*out[-1], single_column))
    return out


def fill_top(v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The filled top level of a pyramid: the whole band's level cells (``fill_levels``' last
    entries, put side by side) filled from their coarser levels."""
    return _pull_push(v, weight)


def fill_block(levels: list[tuple[np.ndarray, np.ndarray]], top: np.ndarray) -> np.ndarray:
    """A block's filled values (float64) from its pyramid (``fill_levels``) and its cells of
    the whole band's filled top level (``fill_top``)."""
    filled = top
    for v, weight in reversed(levels[:-1]):
        filled = _push(v, weight, filled)
    return filled


def denormalize(x: np.ndarray, norm: BandNormalization) -> np.ndarray:
    """Inverts ``normalize``: maps [0, 1] values back to the original range and dtype.

    Integer dtypes are rounded and clipped to the band's [lo, hi] (and the dtype's range);
    float dtypes are only cast. The round trip is exact for uint8 and uint16.

    Args:
        x: (bands, H, W) array, typically the decoder output in [0, 1].
        norm: The normalization returned by ``normalize``.

    Raises:
        DataError: ``x`` is not 3-D, or its band count differs from ``norm``'s.
    """
    _check_image(x, "normalised image")
    if x.shape[0] != norm.bands:
        raise DataError(f"normalised image has {x.shape[0]} bands, normalization has {norm.bands}")
    dt = np.dtype(norm.dtype)
    out = np.empty(x.shape, dt)
    if dt.kind in "ui":
        info = np.iinfo(dt)
    for b in range(norm.bands):
        lo, hi = norm.lo[b], norm.hi[b]
        v = x[b].astype(np.float64) * (hi - lo) + lo
        if dt.kind in "ui":
            # A constant band has hi = lo + 1, so clipping to [lo, hi] could still exceed the
            # dtype for lo = max; the dtype bounds guard that.
            v = np.clip(np.rint(v), max(lo, info.min), min(hi, info.max))
        out[b] = v
    return out


def to_band_groups(x: np.ndarray, group: int = 3) -> np.ndarray:
    """Splits (B, H, W) into (G, group, H, W) float32, G = ceil(B / group).

    The last group is padded by repeating the last real band.

    Raises:
        DataError: ``x`` is not a non-empty 3-D array or ``group`` is not a positive integer.
    """
    _check_image(x, "image")
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
        raise DataError(f"group must be a positive integer, got {group!r}")
    bands, h, w = x.shape
    g = -(-bands // group)
    index = np.minimum(np.arange(g * group), bands - 1)
    return x[index].astype(np.float32).reshape(g, group, h, w)


def from_band_groups(groups: np.ndarray, bands: int) -> np.ndarray:
    """Inverts ``to_band_groups``: (G, group, H, W) -> (bands, H, W), dropping the padding.

    Raises:
        DataError: ``groups`` is not 4-D or ``bands`` does not need exactly G groups.
    """
    if not isinstance(groups, np.ndarray) or groups.ndim != 4 or groups.size == 0:
        shape = getattr(groups, "shape", None)
        raise DataError(f"band groups must be a non-empty (G, group, H, W) array, got {shape}")
    if isinstance(bands, bool) or not isinstance(bands, (int, np.integer)) or bands < 1:
        raise DataError(f"bands must be a positive integer, got {bands!r}")
    g, group, h, w = groups.shape
    if -(-bands // group) != g:
        raise DataError(f"{bands} bands need {-(-bands // group)} groups of {group}, got {g}")
    return groups.reshape(g * group, h, w)[:bands]
