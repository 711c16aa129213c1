"""A temporal reference on another pixel grid: the mapping from georeferences or phase
correlation, the canvas that lines latent positions up, the deterministic resampling, and
exact round trips through the codec that never cost more than coding alone."""
import hashlib

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.warp import transform as warp_points

from conftest import make_smooth_image
from stcm.errors import DataError
from stcm.runtime.codec import Codec, _Reference
from stcm.runtime.container import read_container
from stcm.runtime.grids import (estimate_shift, georeferenced_mapping, reference_grid,
                                resample_latent)
from stcm.runtime.georeference import Georeference
from stcm.runtime.header import IDENTITY_GRID, ReferenceGrid

GRID = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
SHAPE = (100, 120)


def _geo(transform=GRID, crs="EPSG:32633"):
    return Georeference(crs, transform, None)


def _moved(dx_m, dy_m, pixel=10.0):
    return _geo((pixel, 0.0, 500000.0 + dx_m, 0.0, -pixel, 5000000.0 + dy_m))


# -- the mapping from georeferences ---------------------------------------------------------
def test_the_same_grid_is_the_identity_and_no_georeference_is_no_mapping():
    assert georeferenced_mapping(_geo(), _geo(), SHAPE, SHAPE) == IDENTITY_GRID
    assert georeferenced_mapping(_geo(), _moved(0.05, 0), SHAPE, SHAPE) == IDENTITY_GRID
    wkt = CRS.from_epsg(32633).to_wkt()  # one CRS written two ways is one CRS
    assert georeferenced_mapping(_geo(crs=wkt), _geo(), SHAPE, SHAPE) == IDENTITY_GRID
    assert georeferenced_mapping(None, _geo(), SHAPE, SHAPE) is None
    assert georeferenced_mapping(_geo(transform=None), _geo(), SHAPE, SHAPE) is None


def test_a_shift_and_another_pixel_size_map_pixels_onto_the_reference():
    # 25 m east and 10 m south of the reference's origin: column 2.5, row 1 of the reference.
    assert georeferenced_mapping(_geo(), _moved(25.0, -10.0), SHAPE, SHAPE) == pytest.approx(
        (1.0, 0.0, 2.5, 0.0, 1.0, 1.0))
    assert georeferenced_mapping(_geo(), _moved(0, 0, pixel=5.0), SHAPE, SHAPE) == (
        pytest.approx((0.5, 0.0, 0.0, 0.0, 0.5, 0.0)))


def test_another_crs_is_fitted_by_an_affine_that_lands_on_the_same_ground():
    # This image in geographic coordinates over the reference's UTM 33N area.
    lon, lat = warp_points("EPSG:32633", "EPSG:4326", [500000.0], [5000000.0])
    step = 10.0 / 111_000  # ~10 m in degrees
    current = Georeference("EPSG:4326", (step, 0.0, lon[0], 0.0, -step, lat[0]), None)
    a, b, c, d, e, f = georeferenced_mapping(_geo(), current, (400, 400), (64, 64))
    col, row = 40, 20  # a pixel of this image, through both georeferences
    x, y = warp_points("EPSG:4326", "EPSG:32633", [lon[0] + col * step], [lat[0] - row * step])
    want = ((x[0] - 500000.0) / 10.0, (5000000.0 - y[0]) / 10.0)
    assert (a * col + b * row + c, d * col + e * row + f) == pytest.approx(want, abs=0.05)


def test_images_that_do_not_overlap_are_not_the_same_place():
    with pytest.raises(DataError, match="do not overlap"):
        georeferenced_mapping(_geo(), _moved(10.0 * 500, 0), SHAPE, SHAPE)


# -- phase correlation ----------------------------------------------------------------------
def _scene(seed=0, size=400):
    rng = np.random.default_rng(seed)
    return make_smooth_image(rng, 3, size, size) + 0.05 * rng.standard_normal((3, size, size))


@pytest.mark.parametrize("dx,dy", [(12, 5), (-7, 30), (0, -3)])
def test_phase_correlation_finds_the_shift_from_this_image_to_the_reference(dx, dy):
    scene = _scene()
    reference = scene[:, 50:306, 50:306]
    image = scene[:, 50 + dy:306 + dy, 50 + dx:306 + dx]  # its pixel (c, r) = reference's
    got = estimate_shift(reference, image)                 # (c + dx, r + dy)
    assert got == pytest.approx((dx, dy), abs=0.25)


def test_phase_correlation_sees_no_shift_in_unrelated_small_or_aligned_images():
    scene = _scene()
    assert estimate_shift(scene[:, :256, :256], _scene(seed=5)[:, :256, :256]) is None
    assert estimate_shift(scene[:, :32, :32], scene[:, 2:34, 2:34]) is None  # too small
    assert estimate_shift(scene[:, :256, :256], scene[:, :256, :256]) is None


# -- the canvas -----------------------------------------------------------------------------
def test_a_shift_moves_the_canvas_by_its_remainder_and_the_latent_by_whole_positions():
    assert reference_grid(IDENTITY_GRID) is None
    grid = reference_grid((1.0, 0.0, 37.2, 0.0, 1.0, 5.0))
    assert grid == ReferenceGrid((5, 5), (1.0, 0.0, 32.0, 0.0, 1.0, 0.0))
    # Negative: canvas column = image column + 13, reference column = image column - 3.
    grid = reference_grid((1.0, 0.0, -3.0, 0.0, 1.0, 0.0))
    assert grid == ReferenceGrid((0, 13), (1.0, 0.0, -16.0, 0.0, 1.0, 0.0))
    assert reference_grid((1.0, 0.0, 32.0, 0.0, 1.0, 0.0)).origin == (0, 0)
    scaled = (0.5, 0.0, 3.0, 0.0, 0.5, 0.0)  # not a translation: resampled, no canvas
    assert reference_grid(scaled) == ReferenceGrid((0, 0), scaled)


def test_resampling_by_whole_positions_is_a_copy_with_zeros_off_the_reference():
    latent = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    assert resample_latent(latent, None, (80, 96), (5, 6)) is latent
    moved = resample_latent(latent, (1.0, 0.0, 32.0, 0.0, 1.0, -16.0), (80, 96), (5, 6))
    assert np.array_equal(moved[:, 1:, :4], latent[:, :4, 2:])
    assert not moved[:, 0].any() and not moved[:, :, 4:].any()
    # A larger grid than the reference's: zeros where it shows no ground.
    grown = resample_latent(latent, IDENTITY_GRID, (80, 96), (8, 8))
    assert np.array_equal(grown[:, :5, :6], latent) and not grown[:, 5:].any()


def test_resampling_is_bilinear_and_deterministic():
    latent = np.random.default_rng(1).standard_normal((3, 8, 8)).astype(np.float32)
    mapping = (0.5, 0.0, 24.0, 0.0, 0.5, 8.0)  # a reference with pixels twice as large
    out = resample_latent(latent, mapping, (128, 128), (8, 8))
    assert out.dtype == np.float32 and np.array_equal(out, resample_latent(
        latent, mapping, (128, 128), (8, 8)))
    # Position (0, 0) is centred on pixel (8, 8): reference pixel (28, 12), between latent
    # columns 1 and 2 (centres 24 and 40) and rows 0 and 1 (centres 8 and 24).
    u, v = 0.25, 0.25
    want = ((1 - u) * (1 - v) * latent[:, 0, 1] + u * (1 - v) * latent[:, 0, 2]
            + (1 - u) * v * latent[:, 1, 1] + u * v * latent[:, 1, 2])
    assert out[:, 0, 0] == pytest.approx(want, abs=1e-6)


# -- through the codec ----------------------------------------------------------------------
def _pair(dx, dy, size=192):
    """A scene and a revisit of it whose pixel (c, r) is the scene's (c + dx, r + dy)."""
    scene = np.rint(_scene(seed=3, size=size + 80).clip(0, 1) * 255).astype(np.uint8)
    return scene[:, 40:40 + size, 40:40 + size], scene[:, 40 + dy:40 + dy + size,
                                                      40 + dx:40 + dx + size]


@pytest.fixture(scope="module")
def codec(trained_tiny):
    return Codec(trained_tiny, tile_size=4)


@pytest.fixture(scope="module")
def builtin():
    # Phase correlation meets the decoded reference: the tiny model's (about 18 dB) has too
    # little of the scene left to show a clear peak, the built-in model's has.
    return Codec(tile_size=4)


def _psnr(a, b):
    return 10 * np.log10(255 ** 2 / np.mean((a / 1.0 - b) ** 2))


def _decodes_exactly(codec, reference, data, later, georef):
    """The decoder rebuilds the encoder's latents exactly, whole and as a series, and the
    fidelity is that of coding the image alone."""
    header = read_container(data).header
    decoded = codec.decompress_image(data, reference=reference)
    assert decoded.pixels.shape == later.shape
    assert np.array_equal(decoded.pixels, codec.decompress_series([reference, data])[1])
    ref_image, ref_latents = codec._decompress(reference, None)
    ref = _Reference(ref_latents, (192, 192), header.reference_grid)
    ref_id = hashlib.sha256(reference).digest()
    _, enc = codec._compress(later, 0.7, georef, ref, ref_id, temporal="on")
    _, dec = codec._decompress(data, _Reference.decoded(ref_image, ref_latents), reference)
    assert all(np.array_equal(a, b) for a, b in zip(enc, dec))
    alone = codec.decompress(codec.compress(later, 0.7))
    assert _psnr(decoded.pixels, later) > _psnr(alone, later) - 1.0


def test_a_shifted_revisit_decodes_exactly_on_the_canvas(codec):
    # The tiny model has no latent shift tables: the image moves on a canvas.
    first, later = _pair(dx=21, dy=-6)
    georefs = [_geo(), _moved(210.0, 60.0)]
    reference = codec.compress(first, 0.7, georef=georefs[0])
    data = codec.compress(later, 0.7, georef=georefs[1], reference=reference, temporal="on")
    header = read_container(data).header
    # 21 columns right: a canvas of 5 columns, the latent moved by one position (16 px).
    assert header.reference_grid == ReferenceGrid((10, 5), (1.0, 0.0, 16.0, 0.0, 1.0, -16.0))
    assert header.georef == georefs[1]
    _decodes_exactly(codec, reference, data, later, georefs[1])


def test_phase_correlation_finds_a_shift_that_the_builtin_model_s_tables_apply(builtin):
    # No georeferences: phase correlation of the decoded reference finds (21, -6), and the
    # built-in model (latent shift tables) keeps the image on its own grid.
    first, later = _pair(dx=21, dy=-6)
    reference = builtin.compress(first, 0.7)
    data = builtin.compress(later, 0.7, reference=reference, temporal="on")
    header = read_container(data).header
    assert header.reference_grid == ReferenceGrid((0, 0), (1.0, 0.0, 21.0, 0.0, 1.0, -6.0),
                                                  shifted=True)
    _decodes_exactly(builtin, reference, data, later, None)


def test_auto_never_costs_more_than_coding_alone_on_another_grid(codec):
    first, later = _pair(dx=-9, dy=3)
    reference = codec.compress(first, 0.7)
    alone = codec.compress(later, 0.7)
    auto = codec.compress(later, 0.7, reference=reference)
    header = read_container(auto).header
    # Never a byte more than alone: auto also writes the image alone and keeps the smaller.
    assert len(auto) <= len(alone)
    if header.reference_id is None:
        assert auto == alone
    assert np.array_equal(codec.decompress(auto, reference=reference),
                          codec.decompress_series([reference, auto])[1])


def test_auto_never_costs_more_than_alone_with_an_unrelated_reference(codec):
    first, later = _pair(dx=0, dy=0)
    unrelated = codec.compress(np.ascontiguousarray(first[:, ::-1]), 0.3)
    alone = codec.compress(later, 0.3)
    auto = codec.compress(later, 0.3, reference=unrelated)
    assert len(auto) <= len(alone)
    # Whatever it chose, the series' reference decodes it.
    assert np.array_equal(codec.decompress(auto, reference=unrelated),
                          codec.decompress_series([unrelated, auto])[1])


def test_series_of_other_sizes_and_grids_round_trip(codec):
    first, later = _pair(dx=4, dy=11)
    smaller = later[:, :150, :170]
    blobs = codec.compress_series([first, smaller], 0.7, temporal="on")
    assert read_container(blobs[1]).header.reference_grid.origin == (11, 4)
    out = codec.decompress_series(blobs)
    assert out[1].shape == smaller.shape
    assert np.array_equal(out[1], codec.decompress(blobs[1], reference=blobs[0]))


def test_the_codec_refuses_a_reference_of_another_place_before_coding(codec):
    image = np.zeros((3, 64, 64), np.uint8)
    reference = codec.compress(image, 0.5, georef=_geo())
    far = _moved(10.0 * 1000, 0)
    with pytest.raises(DataError, match="do not overlap"):
        codec.compress(image, 0.5, georef=far, reference=reference)
    with pytest.raises(DataError, match="do not overlap"):
        codec.compress_series([image, image], 0.5, georefs=[_geo(), far])
