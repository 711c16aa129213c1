"""The NumPy references of the wavefront kernels equal explicit loops and torch's arithmetic."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stcm.kernels import (dequantize_step, quantize_step, scale_to_index, scatter_column,
                          skew_columns, unskew_columns)
from stcm.runtime.ans import ScaleQuantizer, pinned_scale_table

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
SHAPES = [(1, 1, 1, 1, 0), (2, 3, 5, 4, 2), (1, 2, 3, 7, 4), (2, 1, 6, 1, 1)]  # B, C, h, w, pad


def _edge_scales(thresholds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scales on, just above and just below every threshold, plus specials and random ones."""
    t = thresholds.astype(np.float32)
    specials = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1e-45, 1e-30, 3e38],
                        np.float32)
    randoms = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 2000)).astype(np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(np.inf)),
                           np.nextafter(t, np.float32(-np.inf)), specials, randoms, -randoms])


# --------------------------------------------------------------------------- scale_to_index

@pytest.mark.parametrize("levels", [2, 64, 256])
def test_scale_to_index_equals_scale_quantizer(levels):
    quantizer = ScaleQuantizer(pinned_scale_table(0.11, 256.0, levels))
    scales = _edge_scales(quantizer.thresholds, np.random.default_rng(levels))
    for x in (scales, scales.astype(np.float64), scales[:30].reshape(5, 2, 3)):
        got = scale_to_index(x, quantizer.thresholds)
        assert got.dtype == np.uint8 and got.shape == x.shape
        np.testing.assert_array_equal(got, quantizer.index(x))


def test_scale_to_index_float64_inputs_round_to_float32_first():
    quantizer = ScaleQuantizer(pinned_scale_table(0.11, 256.0, 64))
    t = quantizer.thresholds.astype(np.float64)
    # Just above each threshold in float64, but the same float32: counts as on it.
    x = t * (1 + 1e-12)
    assert np.array_equal(x.astype(np.float32), quantizer.thresholds)
    np.testing.assert_array_equal(scale_to_index(x, quantizer.thresholds), np.arange(t.size))


def test_scale_to_index_counts_thresholds_strictly_below():
    thresholds = np.array([-1.0, 0.5, 0.5, 2.0, 2.0, 2.0, 7.0], np.float32)  # duplicates too
    scales = np.concatenate([_edge_scales(thresholds, np.random.default_rng(0)),
                             np.arange(-30, 90, dtype=np.float32) / 10, [np.nan, -np.nan]])
    expected = [thresholds.size if np.isnan(s) else int(np.sum(thresholds < s))
                for s in scales.astype(np.float32)]
    np.testing.assert_array_equal(scale_to_index(scales, thresholds), expected)


def test_scale_to_index_special_cases():
    empty = np.zeros(0, np.float32)
    np.testing.assert_array_equal(scale_to_index(np.array([1.0, np.nan]), empty), [0, 0])
    assert scale_to_index(np.zeros((0, 3)), np.ones(2, np.float32)).shape == (0, 3)
    np.testing.assert_array_equal(scale_to_index(np.array([0, 1, 5]), np.array([0.5], np.float32)),
                                  [0, 1, 1])  # integer scales


def test_scale_to_index_rejects_bad_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(TypeError):
        scale_to_index(x, np.array([1.0, 2.0]))  # float64 thresholds
    with pytest.raises(ValueError):
        scale_to_index(x, np.array([2.0, 1.0], np.float32))
    with pytest.raises(ValueError):
        scale_to_index(x, np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError):
        scale_to_index(x, np.arange(256, dtype=np.float32))  # indexes would not fit uint8
    with pytest.raises(TypeError):
        scale_to_index(np.array([True]), np.ones(1, np.float32))


# ------------------------------------------------------------------------ skew and unskew

def _skew_loop(x: np.ndarray, pad: int) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros((b, pad + h + w - 1, c, h), np.float32)
    for i in range(h):
        for j in range(w):
            out[:, pad + i + j, :, i] = x[:, :, i, j]
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_skew_matches_loop(shape):
    *dims, pad = shape
    x = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    s = skew_columns(x, pad)
    assert s.dtype == np.float32 and s.flags.c_contiguous
    np.testing.assert_array_equal(s, _skew_loop(x, pad))


@pytest.mark.parametrize("shape", SHAPES)
def test_unskew_inverts_skew_and_ignores_off_map_cells(shape):
    *dims, pad = shape
    b, c, h, w = dims
    rng = np.random.default_rng(2)
    x = rng.standard_normal(dims).astype(np.float32)
    np.testing.assert_array_equal(unskew_columns(skew_columns(x, pad), w, pad), x)
    noisy = rng.standard_normal((b, pad + h + w - 1, c, h)).astype(np.float32)
    expected = np.stack([noisy[:, pad + i: pad + i + w, :, i] for i in range(h)], axis=2)
    got = unskew_columns(noisy, w, pad)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected.transpose(0, 3, 2, 1))


def test_skew_and_unskew_reject_bad_arguments():
    x = np.zeros((1, 1, 2, 3), np.float32)
    with pytest.raises(TypeError):
        skew_columns(x.astype(np.float64), 0)
    with pytest.raises(ValueError):
        skew_columns(x, -1)
    with pytest.raises(ValueError):
        skew_columns(x[0], 0)
    with pytest.raises(TypeError):
        skew_columns(x, 1.0)
    s = skew_columns(x, 2)
    with pytest.raises(ValueError):
        unskew_columns(s, 2, 2)  # wrong width for this many columns
    with pytest.raises(ValueError):
        unskew_columns(s, 3, 1)


# --------------------------------------------------------------- quantize and dequantize

def _torch_step(y: np.ndarray, mean: np.ndarray):
    """The scheduler's encoder visit: symbols = round(y - mean), y_hat = symbols + mean."""
    s = torch.round(torch.from_numpy(y) - torch.from_numpy(mean))
    return s.numpy(), (s + torch.from_numpy(mean)).numpy()


def test_quantize_rounds_half_to_even_like_torch():
    halves = np.arange(-8, 8, dtype=np.float32) + np.float32(0.5)
    y = np.concatenate([halves, halves + 100, np.array([0.49999997, -0.49999997], np.float32)])
    for mean in (np.zeros_like(y), np.full_like(y, 0.25), np.full_like(y, -3.0)):
        y_shifted = y + mean
        symbols, y_hat = quantize_step(y_shifted, mean)
        s, expected = _torch_step(y_shifted, mean)
        assert symbols.dtype == np.int32 and y_hat.dtype == np.float32
        np.testing.assert_array_equal(symbols, s.astype(np.int32))
        np.testing.assert_array_equal(y_hat, expected)
    symbols, _ = quantize_step(halves, np.zeros_like(halves))
    assert np.all(symbols % 2 == 0)  # every tie went to its even neighbour


def test_quantize_matches_torch_and_dequantize_on_random_latents():
    rng = np.random.default_rng(3)
    y = (rng.standard_normal((2, 5, 7)) * 20).astype(np.float32)
    mean = (rng.standard_normal((2, 5, 7)) * 5).astype(np.float32)
    symbols, y_hat = quantize_step(y, mean)
    s, expected = _torch_step(y, mean)
    np.testing.assert_array_equal(symbols, s.astype(np.int32))
    assert y_hat.tobytes() == expected.tobytes()
    # The decoder, from the symbols alone, rebuilds the encoder's y_hat bit for bit.
    assert dequantize_step(symbols, mean).tobytes() == y_hat.tobytes()
    decoded = (torch.from_numpy(symbols.astype(np.float32)) + torch.from_numpy(mean)).numpy()
    assert dequantize_step(symbols, mean).tobytes() == decoded.tobytes()


def test_quantize_saturates_what_int32_cannot_hold():
    y = np.array([np.nan, np.inf, -np.inf, 3e9, -3e9, 2.0 ** 31, -(2.0 ** 31), 2147483520.0],
                 np.float32)
    symbols, y_hat = quantize_step(y, np.zeros_like(y))
    i32 = np.iinfo(np.int32)
    np.testing.assert_array_equal(
        symbols, [0, i32.max, i32.min, i32.max, i32.min, i32.max, i32.min, 2147483520])
    assert y_hat.tobytes() == dequantize_step(symbols, np.zeros_like(y)).tobytes()


def test_dequantize_extremes():
    symbols = np.array([0, 1, -1, 2 ** 24 + 1, 2 ** 31 - 1, -(2 ** 31)], np.int32)
    mean = np.array([0.5, -0.25, 1e-40, 0.0, 0.0, 0.0], np.float32)
    expected = symbols.astype(np.float32) + mean
    assert dequantize_step(symbols, mean).tobytes() == expected.tobytes()


def test_steps_reject_bad_arguments():
    f = np.zeros(3, np.float32)
    with pytest.raises(TypeError):
        quantize_step(f.astype(np.float64), f)
    with pytest.raises(ValueError):
        quantize_step(f, np.zeros(4, np.float32))
    with pytest.raises(TypeError):
        dequantize_step(np.zeros(3, np.int64), f)
    with pytest.raises(ValueError):
        dequantize_step(np.zeros((3, 1), np.int32), f)


# -------------------------------------------------------------------------- scatter_column

@pytest.mark.parametrize("rows", [slice(0, 5), slice(2, 4), (1, 6), (3, 3)])
def test_scatter_column_matches_the_wavefront_update(rows):
    rng = np.random.default_rng(4)
    b, columns, c, h, col = 2, 9, 3, 6, 5
    start, stop = (rows.start, rows.stop) if isinstance(rows, slice) else rows
    cache = rng.standard_normal((b, columns, c, h)).astype(np.float32)
    values = rng.standard_normal((b, c, stop - start)).astype(np.float32)
    valid = (rng.uniform(size=(b, 1, stop - start)) > 0.3).astype(np.float32)
    expected = torch.from_numpy(cache.copy())
    expected[:, col, :, start:stop] = torch.from_numpy(values) * torch.from_numpy(valid)
    scatter_column(cache, col, rows, values, valid)
    assert cache.tobytes() == expected.numpy().tobytes()


def test_scatter_column_rejects_bad_arguments():
    cache = np.zeros((1, 4, 2, 3), np.float32)
    values, valid = np.ones((1, 2, 2), np.float32), np.ones((1, 1, 2), np.float32)
    for col, rows in ((4, (0, 2)), (-1, (0, 2)), (0, (2, 4)), (0, slice(0, 4, 2))):
        with pytest.raises(ValueError):
            scatter_column(cache, col, rows, values, valid)
    with pytest.raises(ValueError):
        scatter_column(cache, 0, (0, 1), values, valid)  # values wider than the rows
    with pytest.raises(ValueError):
        scatter_column(cache, 0, (0, 2), values, np.ones((1, 2, 2), np.float32))
    with pytest.raises(TypeError):
        scatter_column(cache, 0, (0, 2), values.astype(np.float64), valid)
    with pytest.raises(TypeError):
        scatter_column(cache, 0, 2, values, valid)
    assert not cache.any()


# ------------------------------------------------------------------------- package boundary

def test_kernels_import_nothing_else_of_stcm():
    """stcm.kernels may use the standard library, NumPy, CuPy and itself, nothing more."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "cupy"}
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                ok = name == "stcm.kernels" or name.startswith("stcm.kernels.") or (
                    name.split(".")[0] in allowed)
                assert ok, f"{path.name} imports {name}"


def test_cuda_module_imports_without_cupy():
    # A None entry in sys.modules makes `import cupy` raise ImportError, as if not installed.
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import numpy as np, stcm.kernels as k, stcm.kernels.cuda as c\n"
        "assert k.available() is False and c.cp is None\n"
        "try:\n"
        "    c.skew_columns(np.zeros((1, 1, 1, 1), np.float32), 0)\n"
        "except RuntimeError:\n"
        "    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
