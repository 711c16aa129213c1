"""Tests of the synthetic revisit used for temporal-context training."""
import numpy as np
import pytest
from conftest import make_smooth_image

from stcm.errors import DataError
from stcm.models.revisit import synthetic_revisit


def _image(seed: int, bands: int = 3, h: int = 48, w: int = 56) -> np.ndarray:
    return make_smooth_image(np.random.default_rng(seed), bands, h, w).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_revisit_is_deterministic_and_changes_image(seed):
    image = _image(seed)
    original = image.copy()
    a = synthetic_revisit(image, np.random.default_rng(100 + seed))
    b = synthetic_revisit(image, np.random.default_rng(100 + seed))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, original)  # the input is not modified
    assert np.corrcoef(image.ravel(), a.ravel())[0, 1] > 0.5
    assert np.abs(a - image).mean() > 0.005


def test_revisit_depends_on_rng_state():
    image = _image(0)
    a = synthetic_revisit(image, np.random.default_rng(1))
    b = synthetic_revisit(image, np.random.default_rng(2))
    assert np.abs(a - b).mean() > 0.001


@pytest.mark.parametrize("shape", [(3, 48, 56), (5, 20, 33), (1, 1, 1), (3, 2, 3)])
def test_revisit_keeps_shape_dtype_and_unit_range(shape):
    image = np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)
    out = synthetic_revisit(image, np.random.default_rng(4))
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((3, 0, 4), np.float32),
                                 np.zeros((3, 4, 4), np.complex64), [[[0.5]]]])
def test_revisit_rejects_non_image_input(bad):
    with pytest.raises(DataError):
        synthetic_revisit(bad, np.random.default_rng(0))
