"""A georeferenced reference on another pixel grid is refused with what differs; one on the
same grid, or pairs without georeferencing, pass."""
import numpy as np
import pytest
from rasterio.crs import CRS

from stcm.errors import DataError
from stcm.runtime.codec import Codec
from stcm.runtime.grids import check_same_grid
from stcm.runtime.header import Georeference

GRID = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
SHAPE = (100, 120)


def _geo(transform=GRID, crs="EPSG:32633"):
    return Georeference(crs, transform, None)


def test_the_same_grid_passes_and_so_does_a_pair_without_georeferencing():
    check_same_grid(_geo(), _geo(), SHAPE)
    check_same_grid(_geo(), _geo((10.0, 0.0, 500000.0 + 0.05, 0.0, -10.0, 5000000.0)), SHAPE)
    check_same_grid(None, _geo(), SHAPE)
    check_same_grid(_geo(transform=None), _geo(), SHAPE)
    # One CRS written two ways is one CRS.
    wkt = CRS.from_epsg(32633).to_wkt()
    check_same_grid(_geo(crs=wkt), _geo(), SHAPE)


def test_a_shifted_grid_is_refused_with_the_shift_in_pixels():
    shifted = _geo((10.0, 0.0, 500000.0 + 25.0, 0.0, -10.0, 5000000.0 - 10.0))
    with pytest.raises(DataError, match=r"shifted by 2\.50 columns and 1\.00 rows.*reproject"):
        check_same_grid(_geo(), shifted, SHAPE)


def test_another_pixel_size_or_crs_is_refused():
    with pytest.raises(DataError, match="pixel size"):
        check_same_grid(_geo(), _geo((5.0, 0.0, 500000.0, 0.0, -5.0, 5000000.0)), SHAPE)
    with pytest.raises(DataError, match="coordinate system"):
        check_same_grid(_geo(), _geo(crs="EPSG:4326"), SHAPE)


def test_images_that_do_not_overlap_are_not_the_same_place():
    far = _geo((10.0, 0.0, 500000.0 + 10.0 * 500, 0.0, -10.0, 5000000.0))
    with pytest.raises(DataError, match="do not overlap"):
        check_same_grid(_geo(), far, SHAPE)


def test_the_codec_refuses_a_reference_on_another_grid_before_coding(trained_tiny):
    codec = Codec(trained_tiny, tile_size=4)
    image = np.zeros((3, 64, 64), np.uint8)
    reference = codec.compress(image, 0.5, georef=_geo())
    shifted = _geo((10.0, 0.0, 500000.0 + 30.0, 0.0, -10.0, 5000000.0))
    with pytest.raises(DataError, match="shifted by 3.00 columns"):
        codec.compress(image, 0.5, georef=shifted, reference=reference)
    with pytest.raises(DataError, match="shifted"):
        codec.compress_series([image, image], 0.5, georefs=[_geo(), shifted])
    assert codec.compress(image, 0.5, georef=_geo(), reference=reference)
