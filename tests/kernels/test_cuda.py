"""Each CuPy kernel equals its NumPy reference bit for bit, on random inputs and edge cases."""
import numpy as np
import pytest

from stcm.kernels import reference
from stcm.kernels.cuda import available

if not available():
    pytest.skip("needs CuPy with a CUDA GPU (cupy.is_available() is False here)",
                allow_module_level=True)

import cupy as cp  # noqa: E402  (only importable where the skip above did not fire)

from stcm.kernels import cuda  # noqa: E402

SHAPES = [(1, 1, 1, 1, 0), (2, 3, 5, 4, 2), (1, 2, 3, 7, 4), (2, 1, 6, 1, 1), (3, 8, 16, 16, 4)]


def _same(got, expected: np.ndarray) -> None:
    """Bit-exact equality of a device result, signed zeros included.

    NaN only has to be NaN: IEEE leaves the payload of a computed NaN open, and GPUs return a
    canonical one where x86 propagates the input's.
    """
    host = cp.asnumpy(got)
    assert host.dtype == expected.dtype and host.shape == expected.shape
    if expected.dtype.kind == "f":
        nan = np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(host), nan)
        assert host[~nan].tobytes() == expected[~nan].tobytes()
    else:
        assert host.tobytes() == expected.tobytes()


@pytest.fixture(params=[False, True], ids=["grid", "one-block"])
def stride(request, monkeypatch):
    """Runs a test as launched, then with a single block so every thread loops many times."""
    if request.param:
        monkeypatch.setattr(cuda, "_MAX_BLOCKS", 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_skew_and_unskew(shape, stride):
    *dims, pad = shape
    b, c, h, w = dims
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(np.float32)
    s = cuda.skew_columns(cp.asarray(x), pad)
    _same(s, reference.skew_columns(x, pad))
    noisy = rng.standard_normal((b, pad + h + w - 1, c, h)).astype(np.float32)
    _same(cuda.unskew_columns(cp.asarray(noisy), w, pad), reference.unskew_columns(noisy, w, pad))
    _same(cuda.unskew_columns(s, w, pad), x)


def test_skew_of_a_non_contiguous_map():
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5)).astype(np.float32)
    view = x.transpose(0, 1, 3, 2)  # (2, 3, 5, 6), not C-contiguous
    _same(cuda.skew_columns(cp.asarray(x).transpose(0, 1, 3, 2), 2),
          reference.skew_columns(np.ascontiguousarray(view), 2))


def _edge_scales(thresholds: np.ndarray, rng) -> np.ndarray:
    t = thresholds.astype(np.float32)
    specials = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1e-45, 3e38], np.float32)
    randoms = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 5000)).astype(np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(np.inf)),
                           np.nextafter(t, np.float32(-np.inf)), specials, randoms, -randoms])


@pytest.mark.parametrize("count", [0, 1, 2, 63, 255])
def test_scale_to_index(count, stride):
    rng = np.random.default_rng(count)
    thresholds = np.sort(np.exp(rng.uniform(-3, 6, count))).astype(np.float32)
    scales = _edge_scales(thresholds, rng)
    expected = reference.scale_to_index(scales, thresholds)
    _same(cuda.scale_to_index(cp.asarray(scales), thresholds), expected)
    _same(cuda.scale_to_index(cp.asarray(scales), cp.asarray(thresholds)), expected)
    # float64 scales are cast to float32 first, as the reference does.
    wide = scales.astype(np.float64) * (1 + 1e-12)
    _same(cuda.scale_to_index(cp.asarray(wide), thresholds),
          reference.scale_to_index(wide, thresholds))


def test_scale_to_index_shapes_and_duplicates():
    thresholds = np.array([0.5, 0.5, 2.0, 2.0, 2.0, 7.0], np.float32)
    scales = np.random.default_rng(2).uniform(-1, 9, (3, 4, 5)).astype(np.float32)
    scales[0, 0, :3] = [0.5, 2.0, 7.0]
    _same(cuda.scale_to_index(cp.asarray(scales), thresholds),
          reference.scale_to_index(scales, thresholds))
    _same(cuda.scale_to_index(cp.zeros((0, 2), cp.float32), thresholds), np.zeros((0, 2), np.uint8))
    _same(cuda.scale_to_index(cp.arange(10), thresholds),
          reference.scale_to_index(np.arange(10), thresholds))


def _step_inputs(rng):
    y = (rng.standard_normal((4, 7, 33)) * 20).astype(np.float32)
    mean = (rng.standard_normal((4, 7, 33)) * 5).astype(np.float32)
    halves = np.arange(-40, 40, dtype=np.float32) + np.float32(0.5)
    extremes = np.array([np.nan, np.inf, -np.inf, 3e9, -3e9, 2.0 ** 31, -(2.0 ** 31),
                         2147483520.0, 1e-40, -1e-40, 0.49999997, -0.49999997], np.float32)
    y = np.concatenate([y.ravel(), halves, halves + 0.25, extremes])
    mean = np.concatenate([mean.ravel(), np.zeros(80, np.float32),
                           np.full(80, 0.25, np.float32), np.zeros(12, np.float32)])
    return y, mean


def test_quantize_step(stride):
    y, mean = _step_inputs(np.random.default_rng(3))
    symbols, y_hat = cuda.quantize_step(cp.asarray(y), cp.asarray(mean))
    expected_symbols, expected_y_hat = reference.quantize_step(y, mean)
    _same(symbols, expected_symbols)
    _same(y_hat, expected_y_hat)


def test_dequantize_step(stride):
    rng = np.random.default_rng(4)
    symbols = rng.integers(-300, 300, (5, 6, 7), dtype=np.int32)
    mean = rng.standard_normal((5, 6, 7)).astype(np.float32)
    _same(cuda.dequantize_step(cp.asarray(symbols), cp.asarray(mean)),
          reference.dequantize_step(symbols, mean))
    extremes = np.array([2 ** 31 - 1, -(2 ** 31), 2 ** 24 + 1, 0, -1], np.int32)
    small = np.array([0.0, 0.0, 0.0, 1e-40, -0.0], np.float32)
    _same(cuda.dequantize_step(cp.asarray(extremes), cp.asarray(small)),
          reference.dequantize_step(extremes, small))


@pytest.mark.parametrize("rows", [slice(0, 16), slice(3, 9), (5, 16), (7, 7)])
def test_scatter_column(rows, stride):
    rng = np.random.default_rng(5)
    b, columns, c, h, col = 3, 40, 8, 16, 21
    start, stop = (rows.start, rows.stop) if isinstance(rows, slice) else rows
    cache = rng.standard_normal((b, columns, c, h)).astype(np.float32)
    values = rng.standard_normal((b, c, stop - start)).astype(np.float32)
    values[0, 0, :1] = np.nan  # NaN * 0 is NaN on both sides
    valid = (rng.uniform(size=(b, 1, stop - start)) > 0.3).astype(np.float32)
    device = cp.asarray(cache)
    cuda.scatter_column(device, col, rows, cp.asarray(values), cp.asarray(valid))
    reference.scatter_column(cache, col, rows, values, valid)
    _same(device, cache)


def test_scatter_column_from_a_view_of_the_cache(stride):
    rng = np.random.default_rng(6)
    cache = rng.standard_normal((1, 5, 1, 600)).astype(np.float32)
    valid = (rng.uniform(size=(1, 1, 599)) > 0.2).astype(np.float32)
    device = cp.asarray(cache)
    # Rows 1..599 of column 2 from rows 0..598 of the same column: a write would race a read.
    cuda.scatter_column(device, 2, (1, 600), device[:, 2, :, :599], cp.asarray(valid))
    reference.scatter_column(cache, 2, (1, 600), cache[:, 2, :, :599], valid)
    _same(device, cache)


def test_cuda_rejects_what_the_reference_rejects():
    f = cp.zeros(3, cp.float32)
    with pytest.raises(TypeError):
        cuda.quantize_step(np.zeros(3, np.float32), f)  # host array
    with pytest.raises(TypeError):
        cuda.dequantize_step(cp.zeros(3, cp.int64), f)
    with pytest.raises(ValueError):
        cuda.scale_to_index(f, np.array([2.0, 1.0], np.float32))
    with pytest.raises(ValueError):
        cuda.skew_columns(cp.zeros((1, 1, 2, 3), cp.float32), -1)
    cache = cp.zeros((1, 4, 2, 3), cp.float32)
    with pytest.raises(ValueError):
        cuda.scatter_column(cache, 4, (0, 2), cp.ones((1, 2, 2), cp.float32),
                            cp.ones((1, 1, 2), cp.float32))
    with pytest.raises(ValueError):  # a non-contiguous cache cannot be written in place
        cuda.scatter_column(cache.transpose(0, 1, 3, 2), 0, (0, 2),
                            cp.ones((1, 3, 2), cp.float32), cp.ones((1, 1, 2), cp.float32))
