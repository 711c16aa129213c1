"""Continuous quality on real images: over a fine grid, rate and PSNR rise together, so no
quality is dominated by another (interpolated qualities used to be, models/gain.py)."""
import numpy as np
import pytest

import stcm
from stcm.runtime.codec import Codec
from stcm.evaluation.evaluate import mse, peak_value, psnr
from stcm.runtime.imageio import read_raster


@pytest.fixture(scope="module")
def codec():
    return Codec()  # the built-in model


@pytest.mark.parametrize("sample", ["neon_osbs_rgb8.tif", "sentinel2_b234_8_uint16.tif"])
def test_rate_and_psnr_rise_together_over_a_fine_quality_grid(codec, sample):
    pixels = read_raster(stcm.SAMPLES_DIR / sample).pixels  # whole samples: on a 128² crop
    # of the forest the model's PSNR saturates at the top (flat within 0.001 dB from 0.95)
    points = []
    for q in np.linspace(0, 1, 21):
        data = codec.compress(pixels, quality=float(q))
        back = codec.decompress(data)
        points.append((len(data), psnr(mse(pixels, back), peak_value(pixels))))
    sizes, psnrs = zip(*points)
    assert all(b > a for a, b in zip(sizes, sizes[1:])), sizes
    assert all(b > a for a, b in zip(psnrs, psnrs[1:])), psnrs
