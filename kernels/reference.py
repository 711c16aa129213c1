"""NumPy references of the decode-wavefront kernels: what ``stcm.kernels.cuda`` must match.

The wavefront (``stcm.runtime.wavefront``) keeps each latent map F (B, C, h, w) skewed in a
column-major layout S (B, pad + h + w - 1, C, h) with ``S[b, pad + i + j, c, i] = F[b, c, i,
j]`` and zeros elsewhere, so that anti-diagonal t is the contiguous slice ``S[:, pad + t]``.
A decode step maps its scales to table indexes, rounds ``y - mean`` to the symbols (or adds
the decoded symbols back to the mean) and writes ``y_hat`` into the cache column, masked.

Every function here is the bit-exact specification of its CUDA twin: float32 in, float32 out
(``scale_to_index`` excepted: real input cast to float32, uint8 out), no broadcasting
beyond what is documented, and ``ValueError``/``TypeError`` on bad arguments. The argument
checks work on any array with ``shape`` and ``dtype``, so the CUDA module reuses them.
"""
from __future__ import annotations

import numpy as np

#: the array library these operations take and return
xp = np

__all__ = [
    "dequantize_step",
    "quantize_step",
    "scale_to_index",
    "scatter_column",
    "skew_columns",
    "unskew_columns",
]

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
# Indexes are uint8, so at most 255 thresholds (a table of at most 256 values).
_MAX_THRESHOLDS = 255


# ------------------------------------------------------------------------ argument checks

def _int(value, name: str, low: int = 0) -> int:
    """``value`` as a Python int after checking it is an integer >= ``low`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_float32(a, name: str, ndim: int | None = None) -> None:
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")


def _skewed_shape(x, pad) -> tuple[int, int, int, int]:
    """Checks ``skew_columns`` arguments; returns the shape of the skewed result."""
    _check_float32(x, "x", 4)
    pad = _int(pad, "pad")
    b, c, h, w = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"x must have h, w >= 1, got shape {tuple(x.shape)}")
    return b, pad + h + w - 1, c, h


def _unskewed_shape(s, w, pad) -> tuple[int, int, int, int]:
    """Checks ``unskew_columns`` arguments; returns the shape of the map."""
    _check_float32(s, "S", 4)
    w, pad = _int(w, "w", 1), _int(pad, "pad")
    b, columns, c, h = s.shape
    if h < 1 or columns != pad + h + w - 1:
        raise ValueError(f"S of shape {tuple(s.shape)} is not the skew of a map of width {w} "
                         f"with pad {pad} (needs h >= 1 and pad + h + w - 1 columns)")
    return b, c, h, w


def _check_thresholds_meta(thresholds) -> None:
    """Dtype and size checks of the thresholds, cheap for device arrays too."""
    _check_float32(thresholds, "thresholds", 1)
    if thresholds.size > _MAX_THRESHOLDS:
        raise ValueError(f"at most {_MAX_THRESHOLDS} thresholds fit uint8 indexes, "
                         f"got {thresholds.size}")


def _check_thresholds(thresholds: np.ndarray) -> None:
    _check_thresholds_meta(thresholds)
    # A binary search is only a count of the thresholds below when they are sorted.
    if np.isnan(thresholds).any() or np.any(thresholds[1:] < thresholds[:-1]):
        raise ValueError("thresholds must be ascending and free of NaN")


def _check_real(scales, name: str = "scales") -> None:
    kind = scales.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{name} must be real-valued (float or integer), got {scales.dtype}")


def _check_pair(y, mean, y_name: str) -> None:
    """Checks the two same-shaped operands of a quantize or dequantize step."""
    _check_float32(mean, "mean")
    if y.shape != mean.shape:
        raise ValueError(f"{y_name} {tuple(y.shape)} and mean {tuple(mean.shape)} differ in shape")


def _check_symbols(symbols) -> None:
    if symbols.dtype != np.int32:
        raise TypeError(f"symbols must be int32, got {symbols.dtype}")


def _scatter_rows(cache, col, rows, values, valid) -> tuple[int, int]:
    """Checks ``scatter_column`` arguments; returns the rows as (start, stop)."""
    _check_float32(cache, "cache", 4)
    _check_float32(values, "values", 3)
    _check_float32(valid, "valid", 3)
    b, columns, c, h = cache.shape
    col = _int(col, "col")
    if col >= columns:
        raise ValueError(f"col {col} is outside the cache's {columns} columns")
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ValueError(f"rows must be a contiguous slice, got step {rows.step}")
        rows = (rows.start, rows.stop)
    if not isinstance(rows, (tuple, list)) or len(rows) != 2:
        raise TypeError(f"rows must be a slice or a (start, stop) pair, got {rows!r}")
    start, stop = _int(rows[0], "rows start"), _int(rows[1], "rows stop")
    if not start <= stop <= h:
        raise ValueError(f"rows {start}:{stop} do not lie in the cache's {h} rows")
    n = stop - start
    if tuple(values.shape) != (b, c, n):
        raise ValueError(f"values must have shape {(b, c, n)}, got {tuple(values.shape)}")
    if tuple(valid.shape) != (b, 1, n):
        raise ValueError(f"valid must have shape {(b, 1, n)}, got {tuple(valid.shape)}")
    return start, stop


def _saturate(s: np.ndarray) -> np.ndarray:
    """Integral float32 values as int32: NaN -> 0, beyond int32 -> its nearest end.

    A C cast of such values is undefined, so both implementations spell the rule out.
    """
    # Clip in float64: int32's maximum is not a float32 value (it rounds up to 2**31).
    s64 = np.where(np.isnan(s), 0.0, s.astype(np.float64))
    return np.clip(s64, _INT32_MIN, _INT32_MAX).astype(np.int32)


# ---------------------------------------------------------------------------- operations

def skew_columns(x: np.ndarray, pad: int) -> np.ndarray:
    """Skews a map into the wavefront's column-major cache layout.

    Args:
        x: float32 map (B, C, h, w), h and w >= 1.
        pad: Zero columns in front (the causal window's reach), >= 0.

    Returns:
        float32 S (B, pad + h + w - 1, C, h) with ``S[b, pad + i + j, c, i] = x[b, c, i, j]``
        and zeros elsewhere.

    Raises:
        TypeError: If ``x`` is not float32 or ``pad`` not an integer.
        ValueError: On a bad shape or a negative ``pad``.

    Example:
        >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
        >>> skew_columns(x, 1)[0, :, 0]  # column t holds anti-diagonal t - pad, row by row
        array([[0., 0.],
               [0., 0.],
               [1., 3.],
               [2., 4.],
               [0., 5.]], dtype=float32)
    """
    shape = _skewed_shape(x, pad)
    _, _, h, w = x.shape
    out = np.zeros(shape, np.float32)
    i, j = np.mgrid[0:h, 0:w]
    # Two index arrays split by a slice move their (h, w) dimensions to the front.
    out[:, pad + i + j, :, i] = x.transpose(2, 3, 0, 1)
    return out


def unskew_columns(s: np.ndarray, w: int, pad: int) -> np.ndarray:
    """Inverse of ``skew_columns``: reads the map back out of a skewed cache.

    Args:
        s: float32 S (B, pad + h + w - 1, C, h).
        w: Width of the map, >= 1.
        pad: The skew's pad, >= 0.

    Returns:
        float32 map (B, C, h, w) with ``x[b, c, i, j] = S[b, pad + i + j, c, i]``; cells of S
        off the map are ignored.

    Raises:
        TypeError: If ``s`` is not float32 or ``w``, ``pad`` not integers.
        ValueError: If the shape of ``s`` does not match ``w`` and ``pad``.

    Example:
        >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
        >>> bool(np.array_equal(unskew_columns(skew_columns(x, 2), 3, 2), x))
        True
    """
    b, c, h, w = _unskewed_shape(s, w, pad)
    i, j = np.mgrid[0:h, 0:w]
    return np.ascontiguousarray(s[:, pad + i + j, :, i].transpose(2, 3, 0, 1))


def scale_to_index(scales: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Maps scales to scale-table indexes (``stcm.runtime.ans.ScaleQuantizer.index`` is this).

    The index is the number of thresholds strictly below the float32 value of the scale:
    scales at or below the first threshold (zero, negatives, -inf) map to 0, NaN and scales
    above the last threshold (+inf) map to ``len(thresholds)``.

    Args:
        scales: Real-valued array of any shape; cast to float32 first.
        thresholds: float32, 1-D, ascending, no NaN, at most 255 values (a table of at most
            256 values, e.g. ``ScaleQuantizer(table).thresholds``).

    Returns:
        uint8 indexes, same shape as ``scales``.

    Raises:
        TypeError: On a non-real ``scales`` or non-float32 ``thresholds``.
        ValueError: On unsorted, NaN or too many thresholds.

    Example:
        >>> thresholds = np.array([0.5, 1.0, 2.0], np.float32)
        >>> scale_to_index(np.array([-1.0, 0.5, 0.75, 1.0, 9.0, np.nan]), thresholds)
        array([0, 0, 1, 1, 3, 3], dtype=uint8)
    """
    _check_real(scales)
    _check_thresholds(thresholds)
    x = scales.astype(np.float32, copy=False)
    idx = np.searchsorted(thresholds, x, side="left")
    # NumPy sorts NaN last, so searchsorted already gives len; say it: it is the contract.
    idx = np.where(np.isnan(x), thresholds.size, idx)
    return idx.astype(np.uint8)


def quantize_step(y: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's step: symbols ``round(y - mean)`` and the reconstruction ``y_hat``.

    Rounding is half to even (``np.rint``, ``torch.round``, CUDA ``rintf``), in float32.
    ``y_hat`` is computed from the int32 symbols exactly as the decoder does
    (``dequantize_step``), so encoder and decoder agree bit for bit. Values whose rounded
    difference is NaN or beyond int32 (which the coder cannot carry) saturate: NaN -> 0,
    otherwise the nearest int32; only there does ``y_hat`` differ from
    ``torch.round(y - mean) + mean``.

    Args:
        y: float32 latent values, any shape.
        mean: float32 means, same shape.

    Returns:
        (symbols int32, y_hat float32), both of the shape of ``y``.

    Raises:
        TypeError: If ``y`` or ``mean`` is not float32.
        ValueError: If their shapes differ.

    Example:
        >>> y = np.array([0.5, 1.5, 2.5, -1.5, 3.7], np.float32)
        >>> symbols, y_hat = quantize_step(y, np.full(5, 0.25, np.float32))
        >>> symbols  # 0.25, 1.25, 2.25, -1.75, 3.45 rounded
        array([ 0,  1,  2, -2,  3], dtype=int32)
        >>> y_hat
        array([ 0.25,  1.25,  2.25, -1.75,  3.25], dtype=float32)
        >>> symbols, _ = quantize_step(y, np.zeros(5, np.float32))
        >>> symbols  # ties go to the even neighbour
        array([ 0,  2,  2, -2,  4], dtype=int32)
    """
    _check_float32(y, "y")
    _check_pair(y, mean, "y")
    symbols = _saturate(np.rint(y - mean))
    return symbols, dequantize_step(symbols, mean)


def dequantize_step(symbols: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The decoder's step: ``y_hat = symbols + mean`` in float32.

    Args:
        symbols: int32 symbols, any shape.
        mean: float32 means, same shape.

    Returns:
        float32 ``y_hat``, same shape.

    Raises:
        TypeError: If ``symbols`` is not int32 or ``mean`` not float32.
        ValueError: If their shapes differ.

    Example:
        >>> dequantize_step(np.array([-2, 0, 3], np.int32), np.array([0.25, -1, 0.5], np.float32))
        array([-1.75, -1.  ,  3.5 ], dtype=float32)
    """
    _check_symbols(symbols)
    _check_pair(symbols, mean, "symbols")
    # int32 -> float32 rounds to nearest even, as CUDA's (float) cast does; exact below 2**24.
    return symbols.astype(np.float32) + mean


def scatter_column(cache: np.ndarray, col: int, rows, values: np.ndarray,
                   valid: np.ndarray) -> None:
    """Writes one step's ``y_hat`` into a skewed cache column, masked, in place.

    Does ``cache[:, col, :, start:stop] = values * valid`` (``valid`` broadcast over the
    channels): the wavefront's ``update``.

    Args:
        cache: float32 skewed cache (B, columns, C, h), modified in place.
        col: Cache column, ``pad + t`` for step t; 0 <= col < columns.
        rows: The step's rows: a slice with step 1 or a (start, stop) pair,
            0 <= start <= stop <= h.
        values: float32 (B, C, stop - start).
        valid: float32 mask (B, 1, stop - start).

    Raises:
        TypeError: On bad dtypes or a bad ``rows``.
        ValueError: On bad shapes, a column or rows outside the cache.

    Example:
        >>> cache = np.zeros((1, 3, 2, 4), np.float32)
        >>> values = np.array([[[1, 2], [3, 4]]], np.float32)
        >>> scatter_column(cache, 1, slice(1, 3), values, np.array([[[1, 0]]], np.float32))
        >>> cache[0, 1]
        array([[0., 1., 0., 0.],
               [0., 3., 0., 0.]], dtype=float32)
    """
    start, stop = _scatter_rows(cache, col, rows, values, valid)
    cache[:, col, :, start:stop] = values * valid
