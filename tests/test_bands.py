"""Tests of the band and bit-depth mapping onto the 3-band model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from stcm.errors import DataError
from stcm.bands import (
    BandNormalization,
    denormalize,
    from_band_groups,
    normalize,
    to_band_groups,
)


def test_normalize_roundtrip_is_exact_for_uint8():
    image = np.random.default_rng(0).integers(0, 256, (3, 17, 23), dtype=np.uint8)
    x, norm = normalize(image)
    assert x.dtype == np.float32
    assert norm.lo == (0.0,) * 3 and norm.hi == (255.0,) * 3
    restored = denormalize(x, norm)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, image)


def test_uint8_is_not_stretched_to_its_own_range():
    image = np.full((1, 4, 4), 10, np.uint8)
    image[0, 0, 0] = 20
    x, _ = normalize(image)
    np.testing.assert_allclose(x.min(), 10 / 255, rtol=1e-6)
    np.testing.assert_allclose(x.max(), 20 / 255, rtol=1e-6)


def test_normalize_roundtrip_is_exact_for_uint16():
    image = np.random.default_rng(1).integers(0, 65536, (5, 31, 29), dtype=np.uint16)
    image[0, 0, 0], image[0, 0, 1] = 0, 65535  # the full range, the hardest case for float32
    image[1] = np.clip(image[1], 300, 4000)
    x, norm = normalize(image)
    restored = denormalize(x, norm)
    assert restored.dtype == np.uint16
    np.testing.assert_array_equal(restored, image)


def test_normalize_roundtrip_is_exact_for_negative_int16():
    image = np.random.default_rng(2).integers(-32768, 32768, (2, 9, 8), dtype=np.int16)
    x, norm = normalize(image)
    np.testing.assert_array_equal(denormalize(x, norm), image)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint32, np.int32, np.float32,
                                   np.float64])
def test_normalize_stretches_each_band_to_unit_range(dtype):
    rng = np.random.default_rng(3)
    image = (rng.uniform(-50, 50, (4, 10, 12)) + np.arange(4)[:, None, None] * 1000)
    if np.dtype(dtype).kind == "u":
        image = image + 100
    image = image.astype(dtype)
    x, norm = normalize(image)
    assert x.dtype == np.float32 and x.shape == image.shape
    np.testing.assert_allclose(x.min(axis=(1, 2)), 0.0, atol=1e-7)
    np.testing.assert_allclose(x.max(axis=(1, 2)), 1.0, atol=1e-7)
    assert norm.dtype == np.dtype(dtype).name
    np.testing.assert_allclose(norm.lo, image.min(axis=(1, 2)).astype(np.float64))


def test_float_roundtrip_is_close_and_keeps_dtype():
    image = np.random.default_rng(4).normal(0.2, 0.05, (3, 8, 8)).astype(np.float32)
    x, norm = normalize(image)
    restored = denormalize(x, norm)
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, image, atol=1e-6)


def test_constant_band_maps_to_zero_and_restores():
    image = np.stack([np.full((5, 6), 700), np.arange(30).reshape(5, 6)]).astype(np.uint16)
    x, norm = normalize(image)
    assert np.all(x[0] == 0.0)
    assert norm.hi[0] == norm.lo[0] + 1
    np.testing.assert_array_equal(denormalize(x, norm), image)


def test_denormalize_clips_to_band_range_and_dtype():
    norm = BandNormalization("uint16", (100.0, 0.0), (200.0, 65535.0))
    x = np.array([[[-0.5, 1.5]], [[-0.1, 2.0]]], np.float32)
    out = denormalize(x, norm)
    np.testing.assert_array_equal(out, [[[100, 200]], [[0, 65535]]])
    # A constant band at the dtype's maximum has hi = max + 1: still within the dtype.
    top = BandNormalization("uint8", (255.0,), (256.0,))
    assert denormalize(np.ones((1, 1, 1), np.float32), top)[0, 0, 0] == 255


def test_normalize_rejects_nan():
    image = np.zeros((2, 4, 4), np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        normalize(image)


def test_normalize_rejects_inf():
    image = np.zeros((1, 4, 4), np.float64)
    image[0, 0, 0] = -np.inf
    with pytest.raises(DataError, match="inf"):
        normalize(image)


@pytest.mark.parametrize("image", [
    np.zeros((4, 4), np.uint8),
    np.zeros((1, 2, 4, 4), np.uint8),
    np.zeros((3, 0, 4), np.uint16),
    np.zeros((3, 4, 4), bool),
    np.zeros((3, 4, 4), np.complex64),
    [[[1, 2]]],
], ids=["2d", "4d", "empty", "bool", "complex", "list"])
def test_normalize_rejects_unsuitable_arrays(image):
    with pytest.raises(DataError):
        normalize(image)


def test_denormalize_rejects_band_count_mismatch():
    norm = BandNormalization("uint8", (0.0,) * 3, (255.0,) * 3)
    with pytest.raises(DataError, match="bands"):
        denormalize(np.zeros((4, 2, 2), np.float32), norm)


def test_band_normalization_roundtrips_through_json():
    image = np.random.default_rng(5).uniform(-3, 7, (3, 5, 5)).astype(np.float32)
    _, norm = normalize(image)
    again = BandNormalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm


@pytest.mark.parametrize("data", [
    "uint8",
    {"dtype": "uint8", "lo": [0.0]},
    {"dtype": "uint8", "lo": [0.0], "hi": [255.0], "gamma": 2},
    {"dtype": "not_a_dtype", "lo": [0.0], "hi": [1.0]},
    {"dtype": "bool", "lo": [0.0], "hi": [1.0]},
    {"dtype": "complex64", "lo": [0.0], "hi": [1.0]},
    {"dtype": 8, "lo": [0.0], "hi": [1.0]},
    {"dtype": "uint16", "lo": [0.0, 1.0], "hi": [9.0]},
    {"dtype": "uint16", "lo": [], "hi": []},
    {"dtype": "uint16", "lo": [5.0], "hi": [5.0]},
    {"dtype": "uint16", "lo": ["0"], "hi": [9.0]},
    {"dtype": "uint16", "lo": [True], "hi": [9.0]},
    {"dtype": "float32", "lo": [float("nan")], "hi": [9.0]},
    {"dtype": "uint16", "lo": 0.0, "hi": 9.0},
])
def test_band_normalization_from_dict_rejects_bad_fields(data):
    with pytest.raises(DataError):
        BandNormalization.from_dict(data)


@pytest.mark.parametrize("bands", range(1, 17))
def test_band_groups_restore_any_band_count(bands):
    image = np.random.default_rng(bands).uniform(0, 1, (bands, 6, 7)).astype(np.float32)
    groups = to_band_groups(image)
    assert groups.shape == (-(-bands // 3), 3, 6, 7) and groups.dtype == np.float32
    np.testing.assert_array_equal(from_band_groups(groups, bands), image)


def test_band_groups_pad_with_last_real_band():
    image = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)
    groups = to_band_groups(image)
    np.testing.assert_array_equal(groups[1, 0], image[3])
    np.testing.assert_array_equal(groups[1, 1], image[3])
    np.testing.assert_array_equal(groups[1, 2], image[3])
    assert to_band_groups(image, group=2).shape == (2, 2, 2, 2)


def test_band_groups_reject_bad_shapes():
    with pytest.raises(DataError):
        to_band_groups(np.zeros((2, 2), np.float32))
    with pytest.raises(DataError):
        to_band_groups(np.zeros((3, 2, 2), np.float32), group=0)
    with pytest.raises(DataError):
        from_band_groups(np.zeros((3, 2, 2), np.float32), 3)
    with pytest.raises(DataError, match="groups"):
        from_band_groups(np.zeros((2, 3, 2, 2), np.float32), 7)  # 7 bands need 3 groups
    with pytest.raises(DataError):
        from_band_groups(np.zeros((2, 3, 2, 2), np.float32), 0)


def test_bands_module_does_not_import_torch():
    code = "import sys, stcm.bands; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_samples_are_left_out_of_the_range_and_filled_smoothly():
    image = np.tile(np.linspace(1000, 2000, 40), (2, 30, 1)).astype(np.uint16)
    missing = np.zeros(image.shape, bool)
    missing[:, :10, :10] = True
    holed = image.copy()
    holed[missing] = 0  # a nodata value far outside the valid range
    x, norm = normalize(holed, missing)
    assert norm.lo == (1000.0, 1000.0) and norm.hi == (2000.0, 2000.0)  # not 0..2000
    np.testing.assert_array_equal(x[~missing], normalize(image)[0][~missing])
    # The fill continues the valid pixels (a ramp here) instead of jumping to 0 or a mean.
    assert np.abs(np.diff(x[0, :12, :12], axis=1)).max() < 0.2
    assert 0.0 <= x[missing].min() and x[missing].max() <= 0.3


def test_nan_samples_are_accepted_only_where_missing():
    image = np.random.default_rng(6).normal(0, 1, (2, 8, 9)).astype(np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        normalize(image)
    missing = np.isnan(image)
    x, norm = normalize(image, missing)
    assert np.isfinite(x).all() and np.isfinite(norm.lo + norm.hi).all()
