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


def test_revisits_cover_the_misregistration_of_real_pairs():
    # The shift step alone, on a vertical edge: where the edge lands shows the shift.
    from stcm.models.revisit import MAX_SHIFT, SUBPIXEL_SHIFT, _shift

    edge = np.zeros((1, 4, 64), np.float32)
    edge[:, :, 32:] = 1.0
    shifts = np.array([(_shift(edge, np.random.default_rng(seed))[0, 0] > 0.5).argmax() - 32
                       for seed in range(200)])
    assert np.abs(shifts).max() <= MAX_SHIFT + 1 and MAX_SHIFT >= 3
    assert (np.abs(shifts) >= 2).mean() > 0.2  # real pairs: 0.5-3 px, not only sub-pixel
    # and pairs on one grid: a sub-pixel shift mostly leaves the edge where it was
    assert (shifts == 0).mean() > 0.3 and SUBPIXEL_SHIFT[1] <= 1  # 0.18 without them


def test_some_revisits_have_clouds_and_some_are_blurred():
    image = _image(5, 3, 64, 64)
    bright, blurred = 0, 0
    for seed in range(80):
        out = synthetic_revisit(image, np.random.default_rng(seed))
        bright += (out > 0.9).mean() > 0.05 > (image > 0.9).mean()
        blurred += np.abs(np.diff(out, axis=-1)).mean() < 0.8 * np.abs(np.diff(image, axis=-1)).mean()
    assert 5 <= bright <= 40 and blurred >= 5
