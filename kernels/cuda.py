"""CuPy RawKernels of the decode-wavefront operations, bit-exact twins of ``reference``.

Each function takes and returns CuPy arrays, checks its arguments with the reference's own
checks and runs one CUDA kernel: one thread per output element, in a grid-stride loop, with
64-bit indexing. The float arithmetic is the reference's, one IEEE float32 operation at a
time (``rintf`` rounds half to even like ``np.rint``), so results match NumPy bit for bit.

CuPy is optional: this module imports without it, ``available()`` says whether the kernels
can run, and the operations raise ``RuntimeError`` when CuPy is missing. Kernels compile on
first use (NVRTC, cached by CuPy on disk).
"""
from __future__ import annotations

import functools

import numpy as np

from stcm.kernels import reference  # noqa: F401  (the docstring examples run it)
from stcm.kernels.reference import (_check_float32, _check_pair, _check_real, _check_symbols,
                                    _check_thresholds, _check_thresholds_meta, _scatter_rows,
                                    _skewed_shape, _unskewed_shape)

try:
    import cupy as cp
except Exception:  # not installed, or a broken CUDA install failing at import: no GPU path
    cp = None

#: the array library these operations take and return (None without CuPy)
xp = cp

__all__ = [
    "available",
    "dequantize_step",
    "quantize_step",
    "scale_to_index",
    "scatter_column",
    "skew_columns",
    "unskew_columns",
]

_BLOCK = 256
_MAX_BLOCKS = 65535  # enough to fill any GPU; the grid-stride loops cover larger arrays
# The reference does no fused multiply-adds; keep NVRTC from contracting any into FMAs.
_OPTIONS = ("--fmad=false",)

# Every kernel loops over its n output elements with this 64-bit grid stride.
_LOOP = ("for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;"
         " k += (long long)blockDim.x * gridDim.x)")

_SOURCES = {
    "skew_columns": r"""
extern "C" __global__ void skew_columns(const float* __restrict__ x, float* __restrict__ out,
                                        long long n, int channels, int h, int w, int pad,
                                        int columns) {
    LOOP {
        // out is (B, columns, C, h): rows fastest, so neighbouring threads write neighbours.
        long long r = k;
        const int i = (int)(r % h); r /= h;
        const int c = (int)(r % channels); r /= channels;
        const int t = (int)(r % columns);
        const long long b = r / columns;
        const int j = t - pad - i;
        out[k] = (j >= 0 && j < w) ? x[((b * channels + c) * h + i) * w + j] : 0.0f;
    }
}
""",
    "unskew_columns": r"""
extern "C" __global__ void unskew_columns(const float* __restrict__ s, float* __restrict__ out,
                                          long long n, int channels, int h, int w, int pad,
                                          int columns) {
    LOOP {
        long long r = k;
        const int j = (int)(r % w); r /= w;
        const int i = (int)(r % h); r /= h;
        const int c = (int)(r % channels);
        const long long b = r / channels;
        out[k] = s[((b * columns + pad + i + j) * channels + c) * h + i];
    }
}
""",
    "scale_to_index": r"""
extern "C" __global__ void scale_to_index(const float* __restrict__ scales,
                                          const float* __restrict__ thresholds,
                                          unsigned char* __restrict__ out, long long n,
                                          int count) {
    LOOP {
        const float x = scales[k];
        int lo = 0;
        if (isnan(x)) {
            lo = count;  // NaN compares false with everything; the contract sends it last
        } else {
            // Lower bound: the first threshold not below x = the count of those below it.
            int hi = count;
            while (lo < hi) {
                const int mid = (lo + hi) >> 1;
                if (thresholds[mid] < x) lo = mid + 1; else hi = mid;
            }
        }
        out[k] = (unsigned char)lo;
    }
}
""",
    "quantize_step": r"""
extern "C" __global__ void quantize_step(const float* __restrict__ y,
                                         const float* __restrict__ mean,
                                         int* __restrict__ symbols, float* __restrict__ y_hat,
                                         long long n) {
    LOOP {
        const float m = mean[k];
        const float s = rintf(y[k] - m);
        // A C cast of NaN or of values beyond int32 is undefined: saturate explicitly, as
        // the reference does.
        int q;
        if (isnan(s)) q = 0;
        else if (s >= 2147483648.0f) q = 2147483647;
        else if (s <= -2147483648.0f) q = -2147483647 - 1;
        else q = (int)s;
        symbols[k] = q;
        y_hat[k] = (float)q + m;  // from the symbol, exactly as the decoder computes it
    }
}
""",
    "dequantize_step": r"""
extern "C" __global__ void dequantize_step(const int* __restrict__ symbols,
                                           const float* __restrict__ mean,
                                           float* __restrict__ y_hat, long long n) {
    LOOP {
        y_hat[k] = (float)symbols[k] + mean[k];
    }
}
""",
    "scatter_column": r"""
extern "C" __global__ void scatter_column(float* __restrict__ cache,
                                          const float* __restrict__ values,
                                          const float* __restrict__ valid, long long n,
                                          int columns, int channels, int h, int col, int start,
                                          int count) {
    LOOP {
        // One thread per element of values (B, C, count).
        long long r = k;
        const int p = (int)(r % count); r /= count;
        const int c = (int)(r % channels);
        const long long b = r / channels;
        cache[((b * columns + col) * channels + c) * h + start + p] =
            values[k] * valid[b * count + p];
    }
}
""",
}


def available() -> bool:
    """Whether the CUDA kernels can run: CuPy imports and sees a usable CUDA device.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:  # a driver that fails while probing counts as no GPU
        return False


@functools.cache
def _kernel(name: str):
    if cp is None:
        raise RuntimeError("stcm.kernels.cuda needs CuPy with a CUDA GPU; CuPy is not installed")
    return cp.RawKernel(_SOURCES[name].replace("LOOP", _LOOP), name, options=_OPTIONS)


def _launch(name: str, n: int, *args) -> None:
    """Runs kernel ``name`` over ``n`` elements; ``args`` follow its signature after n."""
    if n == 0:
        return  # a launch with zero blocks is an error
    blocks = min(-(-n // _BLOCK), _MAX_BLOCKS)
    _kernel(name)((blocks,), (_BLOCK,), args)


def _device(a, name: str):
    """``a`` as a C-contiguous CuPy array (a copy only when it is not one already)."""
    if cp is None:
        raise RuntimeError("stcm.kernels.cuda needs CuPy with a CUDA GPU; CuPy is not installed")
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{name} must be a CuPy array, got {type(a).__name__}")
    return cp.ascontiguousarray(a)


def _overlaps(a, b) -> bool:
    """Whether two C-contiguous device arrays share bytes."""
    return bool(a.nbytes and b.nbytes and a.data.ptr < b.data.ptr + b.nbytes
                and b.data.ptr < a.data.ptr + a.nbytes)


# Python ints would reach the kernels as 64-bit values; the signatures take int / long long.
_i32, _i64 = np.int32, np.int64


def skew_columns(x, pad: int):
    """GPU ``reference.skew_columns``: (B, C, h, w) -> skewed (B, pad + h + w - 1, C, h).

    Args:
        x: float32 CuPy map (B, C, h, w), h and w >= 1.
        pad: Zero columns in front, >= 0.

    Returns:
        float32 CuPy array, ``S[b, pad + i + j, c, i] = x[b, c, i, j]``, zeros elsewhere.

    Raises:
        TypeError, ValueError: As the reference; TypeError also for a non-CuPy ``x``.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
        >>> reference.skew_columns(x, 0)[0, :, 0]
        array([[0., 0.],
               [1., 3.],
               [2., 4.],
               [0., 5.]], dtype=float32)
    """
    x = _device(x, "x")
    shape = _skewed_shape(x, pad)
    _, columns, c, h = shape
    out = cp.empty(shape, cp.float32)
    _launch("skew_columns", out.size, x, out, _i64(out.size), _i32(c), _i32(h),
            _i32(x.shape[3]), _i32(pad), _i32(columns))
    return out


def unskew_columns(s, w: int, pad: int):
    """GPU ``reference.unskew_columns``: skewed (B, pad + h + w - 1, C, h) -> (B, C, h, w).

    Args:
        s: float32 CuPy skewed array.
        w: Width of the map, >= 1.
        pad: The skew's pad, >= 0.

    Returns:
        float32 CuPy map, ``x[b, c, i, j] = S[b, pad + i + j, c, i]``.

    Raises:
        TypeError, ValueError: As the reference; TypeError also for a non-CuPy ``s``.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
        >>> reference.unskew_columns(reference.skew_columns(x, 1), 3, 1)[0, 0]
        array([[0., 1., 2.],
               [3., 4., 5.]], dtype=float32)
    """
    s = _device(s, "S")
    shape = _unskewed_shape(s, w, pad)
    _, c, h, w = shape
    out = cp.empty(shape, cp.float32)
    _launch("unskew_columns", out.size, s, out, _i64(out.size), _i32(c), _i32(h), _i32(w),
            _i32(pad), _i32(s.shape[1]))
    return out


def scale_to_index(scales, thresholds):
    """GPU ``reference.scale_to_index``: uint8 count of thresholds strictly below each scale.

    A binary search per element; NaN and scales above the last threshold map to
    ``len(thresholds)``.

    Args:
        scales: Real-valued CuPy array of any shape; cast to float32 first.
        thresholds: float32, 1-D, ascending, no NaN, at most 255 values; a NumPy array (checked
            in full and uploaded on every call) or a CuPy array (uploaded once by the caller;
            its order and NaN-freedom are then the caller's to guarantee, since checking them
            would synchronize with the device).

    Returns:
        uint8 CuPy indexes, same shape as ``scales``.

    Raises:
        TypeError, ValueError: As the reference; TypeError also for a non-CuPy ``scales``.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> thresholds = np.array([0.5, 1.0, 2.0], np.float32)
        >>> reference.scale_to_index(np.array([0.0, 1.0, 1.5, np.inf, np.nan]), thresholds)
        array([0, 1, 2, 3, 3], dtype=uint8)
    """
    if cp is None:
        raise RuntimeError("stcm.kernels.cuda needs CuPy with a CUDA GPU; CuPy is not installed")
    if isinstance(thresholds, np.ndarray):
        _check_thresholds(thresholds)
        thresholds = cp.asarray(thresholds)
    else:
        thresholds = _device(thresholds, "thresholds")
        _check_thresholds_meta(thresholds)
    scales = _device(scales, "scales")
    _check_real(scales)
    x = cp.ascontiguousarray(scales.astype(cp.float32, copy=False))
    out = cp.empty(x.shape, cp.uint8)
    _launch("scale_to_index", x.size, x, thresholds, out, _i64(x.size), _i32(thresholds.size))
    return out


def quantize_step(y, mean):
    """GPU ``reference.quantize_step``: (int32 ``round(y - mean)``, float32 ``y_hat``).

    Rounds half to even; NaN and differences beyond int32 saturate (NaN -> 0) as in the
    reference, and ``y_hat = symbols + mean`` exactly as the decoder computes it.

    Args:
        y: float32 CuPy latent values, any shape.
        mean: float32 CuPy means, same shape.

    Returns:
        (symbols int32, y_hat float32) CuPy arrays of the shape of ``y``.

    Raises:
        TypeError, ValueError: As the reference; TypeError also for non-CuPy arrays.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> symbols, y_hat = reference.quantize_step(np.array([2.5, -0.7], np.float32),
        ...                                          np.array([0.0, 0.5], np.float32))
        >>> symbols, y_hat
        (array([ 2, -1], dtype=int32), array([ 2. , -0.5], dtype=float32))
    """
    y, mean = _device(y, "y"), _device(mean, "mean")
    _check_float32(y, "y")
    _check_pair(y, mean, "y")
    symbols = cp.empty(y.shape, cp.int32)
    y_hat = cp.empty(y.shape, cp.float32)
    _launch("quantize_step", y.size, y, mean, symbols, y_hat, _i64(y.size))
    return symbols, y_hat


def dequantize_step(symbols, mean):
    """GPU ``reference.dequantize_step``: float32 ``y_hat = symbols + mean``.

    Args:
        symbols: int32 CuPy symbols, any shape.
        mean: float32 CuPy means, same shape.

    Returns:
        float32 CuPy ``y_hat``.

    Raises:
        TypeError, ValueError: As the reference; TypeError also for non-CuPy arrays.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> reference.dequantize_step(np.array([3], np.int32), np.array([-0.25], np.float32))
        array([2.75], dtype=float32)
    """
    symbols, mean = _device(symbols, "symbols"), _device(mean, "mean")
    _check_symbols(symbols)
    _check_pair(symbols, mean, "symbols")
    y_hat = cp.empty(mean.shape, cp.float32)
    _launch("dequantize_step", mean.size, symbols, mean, y_hat, _i64(mean.size))
    return y_hat


def scatter_column(cache, col: int, rows, values, valid) -> None:
    """GPU ``reference.scatter_column``: ``cache[:, col, :, rows] = values * valid``, in place.

    Args:
        cache: float32 C-contiguous CuPy cache (B, columns, C, h), modified in place (a copy
            would lose the write, so a non-contiguous cache is refused).
        col: Cache column, 0 <= col < columns.
        rows: A slice with step 1 or a (start, stop) pair, 0 <= start <= stop <= h.
        values: float32 CuPy (B, C, stop - start).
        valid: float32 CuPy mask (B, 1, stop - start).

    Raises:
        TypeError, ValueError: As the reference; TypeError also for non-CuPy arrays;
            ValueError also for a non-contiguous cache.
        RuntimeError: If CuPy is not installed.

    Example:
        The result is the NumPy reference's:

        >>> cache = np.zeros((1, 2, 1, 3), np.float32)
        >>> reference.scatter_column(cache, 0, (0, 2), np.ones((1, 1, 2), np.float32),
        ...                          np.array([[[0, 1]]], np.float32))
        >>> cache[0, 0, 0]
        array([0., 1., 0.], dtype=float32)
    """
    if cp is None:
        raise RuntimeError("stcm.kernels.cuda needs CuPy with a CUDA GPU; CuPy is not installed")
    if not isinstance(cache, cp.ndarray):
        raise TypeError(f"cache must be a CuPy array, got {type(cache).__name__}")
    if not cache.flags.c_contiguous:
        raise ValueError("cache must be C-contiguous: the kernel writes it in place")
    values, valid = _device(values, "values"), _device(valid, "valid")
    start, stop = _scatter_rows(cache, col, rows, values, valid)
    # Threads read the inputs while others write the cache; NumPy forms values * valid
    # before writing, so copy inputs that alias the cache to keep its result.
    if _overlaps(cache, values):
        values = values.copy()
    if _overlaps(cache, valid):
        valid = valid.copy()
    _, columns, c, h = cache.shape
    _launch("scatter_column", values.size, cache, values, valid, _i64(values.size),
            _i32(columns), _i32(c), _i32(h), _i32(col), _i32(start), _i32(stop - start))
